"""The segmenter's fast CPU encoder (`segmentation/cpu_encoder.py`): its masks agree with fp32 on real LiteMedSAM
slices, `torch-fp32` stays as it was, and a stored converted encoder is reused only when it checks out (a corrupt,
stale or wrong one is converted again, never used)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monailabel_app.demo.sample_studies import ellipsoid_ct, xray_picture
from monailabel_app.imaging.windowing import to_display_rgb
from monailabel_app.segmentation.cpu_encoder import (
    GRAPH,
    MANIFEST,
    WEIGHTS,
    file_sha256,
    openvino_cpu_capabilities,
    openvino_encoder,
    probe_input,
    resolve_encoder,
    speed_up_encoder,
)
from monailabel_app.segmentation.factory import build_segmenter
from monailabel_app.segmentation.sam import SamSegmenter
from tests.segmentation.test_segmenters import tiny_random_sam

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")

MIN_IOU = 0.85  # at the model's 256 px frame, against fp32 (issue 24)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def questions() -> list[tuple[np.ndarray, list[float]]]:
    """Three pictures with different answers: the CT lesion's widest slice, a slice near its end, an X-ray."""
    volume, truth = ellipsoid_ct()
    asked = []
    for k in (7, 4):
        rows, columns = np.nonzero(truth[k])
        asked.append((to_display_rgb(volume[k], "soft_tissue"), [columns.min(), rows.min(), columns.max(), rows.max()]))
    asked.append((to_display_rgb(xray_picture(), "auto"), [95.0, 55.0, 165.0, 125.0]))
    return asked


@pytest.fixture(scope="module")
def fp32():
    return build_segmenter("litemedsam", encoder="torch-fp32")


def test_the_fast_encoder_draws_the_fp32_masks_on_real_slices(fp32, tmp_path):
    fast = build_segmenter("litemedsam", encoder="auto", encoder_dir=str(tmp_path), encoder_in_background=False)
    assert fast.encoder_path in ("openvino-bf16", "openvino-fp32") and fp32.encoder_path == "torch-fp32"
    frames = []
    for picture, box in questions():
        ours, reference = fast.segment(picture, box=box), fp32.segment(picture, box=box)
        assert not ours.cache_hit and ours.mask.any()
        frames.append((ours.low_res_logits[0] > 0, reference.low_res_logits[0] > 0))
    for index, (ours, reference) in enumerate(frames):
        assert iou(ours, reference) >= MIN_IOU, index  # the mask at LiteMedSAM's 256 px frame
        for other, (_, elsewhere) in enumerate(frames):  # and not a mask that would pass for another picture's
            if other != index:
                assert iou(ours, elsewhere) < MIN_IOU, (index, other)


def test_torch_fp32_keeps_the_torch_encoder(fp32):
    assert type(fp32.model.image_encoder).__name__ == "TinyViT" and fp32.encoder_ready.is_set()
    picture, box = questions()[0]
    assert fp32.segment(picture, box=box).mask.any()


def test_the_path_follows_the_device_and_the_cpu():
    assert resolve_encoder("auto", "cuda") == resolve_encoder("openvino-bf16", "cuda:1") == "torch-fp32"
    assert resolve_encoder("openvino-fp32", "cpu") == "openvino-fp32"
    assert resolve_encoder("torch-fp32", "cpu") == "torch-fp32"
    capabilities = openvino_cpu_capabilities()
    assert resolve_encoder("auto", "cpu") == ("openvino-bf16" if "BF16" in capabilities else "openvino-fp32")
    with pytest.raises(ValueError, match="segmenter_encoder must be one of"):
        resolve_encoder("fast", "cpu")


@pytest.fixture
def tiny_encoder():
    return tiny_random_sam().image_encoder.eval()


def stored_entry(folder: Path) -> Path:
    (entry,) = [path for path in folder.iterdir() if (path / MANIFEST).is_file()]
    return entry


def converted_again(caplog, folder: Path, encoder) -> bool:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monailabel_app.segmentation.cpu_encoder"):
        fast = openvino_encoder(encoder, "openvino-fp32", folder)
    with torch.no_grad():
        expected = encoder(probe_input(encoder))
    assert torch.allclose(fast(probe_input(encoder)), expected, atol=1e-4)  # whichever way, it computes the encoder
    return "converted" in caplog.text


def test_a_stored_encoder_is_reused_only_while_it_checks_out(tmp_path, tiny_encoder, caplog):
    assert converted_again(caplog, tmp_path, tiny_encoder)
    entry = stored_entry(tmp_path)
    assert not converted_again(caplog, tmp_path, tiny_encoder) and "stored in" in caplog.text

    weights = entry / WEIGHTS  # corrupt: a byte of the weights changed
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert (
        converted_again(caplog, tmp_path, tiny_encoder)
        and "encoder.bin is not the file that was written" in caplog.text
    )
    assert file_sha256(weights) == json.loads((entry / MANIFEST).read_text())["sha256"][WEIGHTS]

    manifest = json.loads((entry / MANIFEST).read_text())  # stale: made by another torch
    manifest["key"]["torch"] = "1.0.0"
    (entry / MANIFEST).write_text(json.dumps(manifest))
    assert converted_again(caplog, tmp_path, tiny_encoder) and "other weights or software versions" in caplog.text

    (entry / GRAPH).unlink()  # half gone
    assert converted_again(caplog, tmp_path, tiny_encoder)
    assert not converted_again(caplog, tmp_path, tiny_encoder)


def plant_another_models_entry(caplog, folder: Path, encoder) -> None:
    """`folder / "ours"` gets a kept entry for `encoder` whose files (and manifest) are another model's: written by
    hand, they pass every file check and only the probe picture tells them apart."""
    converted_again(caplog, folder / "other", tiny_random_sam(seed=1).image_encoder.eval())
    converted_again(caplog, folder / "ours", encoder)
    ours, theirs = stored_entry(folder / "ours"), stored_entry(folder / "other")
    for name in (GRAPH, WEIGHTS):
        (ours / name).write_bytes((theirs / name).read_bytes())
    manifest = json.loads((ours / MANIFEST).read_text())
    manifest["sha256"].update({name: file_sha256(ours / name) for name in (GRAPH, WEIGHTS)})
    (ours / MANIFEST).write_text(json.dumps(manifest))


def test_a_stored_encoder_of_other_weights_is_caught_by_the_probe(tmp_path, tiny_encoder, caplog):
    """Files that match their manifest but compute another model (written by hand): the probe picture's embedding
    disagrees with the fp32 encoder's, so it is converted again."""
    plant_another_models_entry(caplog, tmp_path, tiny_encoder)
    assert converted_again(caplog, tmp_path / "ours", tiny_encoder)
    assert "disagrees with fp32" in caplog.text


def test_a_kept_entry_that_fails_at_load_is_converted_in_the_background_once(tmp_path, caplog):
    """The load's own look at the kept entry finds it computes another model: fp32 serves, the background converts
    without looking at (and compiling) the bad entry a second time, and the fast encoder ends in place."""
    plant_another_models_entry(caplog, tmp_path, tiny_random_sam().image_encoder.eval())
    segmenter = SamSegmenter(tiny_random_sam(), name="tiny")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monailabel_app.segmentation.cpu_encoder"):
        speed_up_encoder(segmenter, "openvino-fp32", "cpu", str(tmp_path / "ours"))
        assert segmenter.encoder_path == "torch-fp32"
        assert segmenter.encoder_ready.wait(120)
    assert segmenter.encoder_path == "openvino-fp32"
    assert caplog.text.count("disagrees with fp32") == 1 and "converted" in caplog.text


def test_a_load_without_openvino_settles_on_fp32_at_once(tmp_path):
    """`openvino-fp32` named, a model folder given, openvino not importable: the load says why, the fp32 encoder
    serves, and nothing is left pending (a question would otherwise wait on `encoder_ready`)."""
    code = (
        "import sys; sys.modules['openvino'] = None\n"
        "from monailabel_app.segmentation.factory import build_segmenter\n"
        f"s = build_segmenter('litemedsam', encoder='openvino-fp32', encoder_dir={str(tmp_path)!r})\n"
        "print(s.encoder_ready.is_set(), s.encoder_path)"
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=300, cwd=Path(__file__).parents[2], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().split() == ["True", "torch-fp32"]
    assert "could not be made" in done.stderr.decode()


def test_openvino_is_imported_without_its_usage_telemetry(tmp_path):
    """`import openvino` alone writes a client id under ~/intel and reports the import; ours writes and sends
    nothing."""
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env["HOME"] = str(tmp_path / "plain")  # (openvino's telemetry is off on CI machines: those variables say so)
    for home in ("plain", "ours"):
        (tmp_path / home).mkdir()
    subprocess.run([sys.executable, "-c", "import openvino"], env=env, check=True, timeout=120)
    assert (tmp_path / "plain" / "intel").exists()  # what the test guards against happens without the guard
    env["HOME"] = str(tmp_path / "ours")
    code = "from monailabel_app.segmentation.cpu_encoder import import_openvino; import_openvino().Core()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120, cwd=Path(__file__).parents[2])
    assert not (tmp_path / "ours" / "intel").exists()


@pytest.fixture(scope="module")
def kept_encoder_folder(tmp_path_factory) -> Path:
    """A model folder where a process that built LiteMedSAM kept its converted encoder (exiting as it converted)."""
    folder = tmp_path_factory.mktemp("model") / "segmenter_encoders"
    code = (
        "from monailabel_app.segmentation.factory import build_segmenter; "
        f"build_segmenter('litemedsam', encoder='openvino-fp32', encoder_dir={str(folder)!r})"
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=300, cwd=Path(__file__).parents[2], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return folder


def test_a_process_that_ends_during_the_conversion_ends_cleanly_and_keeps_it(kept_encoder_folder):
    """A server stopped (or a tool done) while the encoder converts in the background: the process waits for the
    conversion and exits 0 with the encoder kept, where a daemon thread inside OpenVINO at exit aborted it (134)."""
    assert stored_entry(kept_encoder_folder)  # the conversion finished and was kept for the next start


def test_a_kept_encoder_is_in_place_when_the_build_returns(kept_encoder_folder):
    """A later start takes the kept encoder on the load's own thread: the first answer already has it (the fp32
    encoder's first slice cost more than reading, compiling and checking it), nothing is left to swap in."""
    segmenter = build_segmenter("litemedsam", encoder="openvino-fp32", encoder_dir=str(kept_encoder_folder))
    assert segmenter.encoder_ready.is_set() and segmenter.encoder_path == "openvino-fp32"
    first = build_segmenter("litemedsam", encoder="openvino-fp32", encoder_dir=str(kept_encoder_folder / "empty"))
    assert first.encoder_path == "torch-fp32"  # nothing kept there: fp32 serves while it converts in the background
    first.encoder_ready.wait(300)
    assert first.encoder_path == "openvino-fp32"

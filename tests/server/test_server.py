"""The real MONAI Label server with this app, spoken to exactly as 3D Slicer and OHIF speak to it.

Slicer: MONAI Label's own client (the one the Slicer module bundles), `POST /infer/{model}?image=ID` with a multipart
`params` field holding the model's config values plus `result_extension=.nrrd`, `result_dtype=uint8`. OHIF:
`POST /infer/{model}?image=ID&output=image` with `result_compress=false` and `restore_label_idx=false` as well.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import itk
import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from monailabel_app.demo.sample_studies import CT_LESION, CT_SHAPE, write_ct, write_png, xray_picture
from monailabel_app.grounding.last_answers import last_answer
from monailabel_app.imaging.medical_image import read_medical_image
from tests.support.monailabel_server import MonaiLabelServer

pytestmark = pytest.mark.server

QUESTION = "Which structure would explain the dull percussion note over the right lower chest?"
CT_ID, XRAY_ID = "ct_chest_lesion", "xray_opacity"


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studies")
    write_ct(folder / f"{CT_ID}.nii.gz")
    write_png(xray_picture(), folder / f"{XRAY_ID}.png")
    return folder


@pytest.fixture(scope="module")
def server(studies, format_tuned_reasoner_dir, tmp_path_factory):
    conf = {"models": "implicit_query", "reasoner": str(format_tuned_reasoner_dir), "max_new_tokens": "96"}
    conf.update(batch_max_rows="8", batch_window_ms="300")  # batched serving on (auto turns it off on CPU)
    running = MonaiLabelServer(studies, conf, tmp_path_factory.mktemp("logs") / "server.log").start()
    yield running
    running.stop()


def slicer_infer(server, model, image_id, extra=None, file=None):
    """What the Slicer module does: the config's values (first item of lists), then its result format."""
    client = MONAILabelClient(server.url, tmpdir=str(server.studies.parent / "slicer_tmp"))  # as Slicer: its own folder
    config = client.info()["models"][model]["config"]
    params = {k: v[0] if isinstance(v, list) else v for k, v in config.items()}
    params.update(extra or {})
    params.update(result_extension=".nrrd", result_dtype="uint8")
    return client.infer(model, image_id, params, file=file)


def ohif_infer(server, model, image_id, params):
    params = {**params, "result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False}
    params["restore_label_idx"] = False
    return requests.post(
        f"{server.url}/infer/{model}",
        params={"image": image_id, "output": "image"},
        files={"params": (None, json.dumps(params))},
        timeout=300,
    )


def assert_serves(server):
    """After any bad request the server must answer a good one normally."""
    _, result = slicer_infer(server, "implicit_query", XRAY_ID, {"question": QUESTION})
    assert result["status"] == "ok"


def test_info_lists_both_views_with_a_question_text_field(server):
    models = requests.get(f"{server.url}/info/", timeout=30).json()["models"]
    auto, point = models["implicit_query"], models["implicit_query_slice"]
    assert auto["type"] == "segmentation" and point["type"] == "deepgrow" and point["dimension"] == 2
    for view in (auto, point):
        assert view["config"]["question"] == ""  # a string: Slicer and OHIF show a text box
        assert view["config"]["window"][0] == "auto" and isinstance(view["config"]["think"], bool)
        assert view["labels"] == {"target": 1}
    assert auto["config"]["slice"] == -1


def test_slicer_volume_request_returns_label_on_the_input_geometry(server, studies, tmp_path):
    label_file, result = slicer_infer(server, "implicit_query", CT_ID, {"question": QUESTION})
    assert result["status"] == "ok", result
    assert result["slice"] == CT_SHAPE[0] // 2
    ((name, value),) = result["label_names"].items()  # Slicer's segment name: the answer in a few words
    assert value == 1 and name.startswith(f"Answer: {QUESTION[:70]}") and len(name) <= 90
    assert result["reasoning"] and result["raw_text"].startswith("<think>")
    assert len(result["box_ijk"]) == 2 and all(p[2] == result["slice"] for p in result["points_ijk"])
    assert "untrained" in result["notice"]
    for stage in ("reasoner_prefill", "reasoner_decode", "parse", "segmenter_encode", "segmenter_decode", "total"):
        assert result["latencies"][stage] >= 0
    label = read_medical_image(label_file)
    source = read_medical_image(str(studies / f"{CT_ID}.nii.gz"))
    assert label_file.endswith(".nrrd") and label.array.dtype == np.uint8
    assert label.array.shape == source.array.shape
    assert np.allclose(label.geometry()["spacing"], source.geometry()["spacing"])
    assert np.allclose(label.geometry()["origin"], source.geometry()["origin"])
    assert np.allclose(label.geometry()["direction"], source.geometry()["direction"])
    filled = np.flatnonzero(label.array.reshape(label.array.shape[0], -1).any(axis=1)).tolist()
    assert filled == [result["slice"]] and label.array.sum() == result["mask_pixels"] > 0


def test_slicer_point_panel_grounds_the_slice_in_view(server):
    k = CT_SHAPE[0] // 2 + 2
    extra = {"question": QUESTION, "label": "target", "foreground": [[int(CT_LESION.cx), int(CT_LESION.cy), k]]}
    extra.update(background=[], slice=k)
    label_file, result = slicer_infer(server, "implicit_query_slice", CT_ID, extra)
    assert result["status"] == "ok" and result["slice"] == k
    label = read_medical_image(label_file).array
    assert label[k].any() and not np.delete(label, k, axis=0).any()


def test_second_question_on_a_slice_reuses_the_image_embedding(server):
    k = CT_SHAPE[0] // 2 - 1
    _, first = slicer_infer(server, "implicit_query", CT_ID, {"question": QUESTION, "slice": k})
    _, second = slicer_infer(server, "implicit_query", CT_ID, {"question": "Where is the mass?", "slice": k})
    assert first["embedding_cached"] is False and second["embedding_cached"] is True
    assert "segmenter_encode" in second["latencies"]


def test_a_confidence_is_in_the_result_and_the_image_record(server):
    assert server_info(server)["models"]["implicit_query"]["config"]["confidence_samples"] == 0  # auto on CPU: off
    _, result = slicer_infer(server, "implicit_query", XRAY_ID, {"question": QUESTION, "confidence_samples": 3})
    assert 0.0 <= result["confidence"] <= 1.0 and result["confidence_detail"]["samples"] == 3
    record = requests.get(f"{server.url}/datastore/image/info", params={"image": XRAY_ID}, timeout=30).json()
    assert last_answer(record, None)["confidence"] == result["confidence"]
    for bad in (9, 17, -1, 2.5, "many"):  # 9: over this server's confidence_max_samples (8)
        with pytest.raises(MONAILabelClientException, match="confidence_samples"):
            slicer_infer(server, "implicit_query", XRAY_ID, {"question": QUESTION, "confidence_samples": bad})
    _, off = slicer_infer(server, "implicit_query", XRAY_ID, {"question": QUESTION})
    assert off["confidence"] is None and off["confidence_detail"] is None


def test_concurrent_requests_share_the_reasoner_and_get_their_own_answers(server):
    """Pictures of two sizes (the X-ray; CT slices): an answer given to the wrong request would land in the wrong
    frame; the in-process batching tests check row order on a random-weight model."""
    asks = [(XRAY_ID, -1), (CT_ID, 3), (CT_ID, 6), (XRAY_ID, -1)]

    def ask(image_and_slice):
        image_id, k = image_and_slice
        return slicer_infer(server, "implicit_query", image_id, {"question": QUESTION, "slice": k})[1]

    alone = [ask(a) for a in asks]
    with ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(ask, asks))
    assert [(r["box"], r["points"], r["mask_pixels"], r["slice"]) for r in together] == [
        (r["box"], r["points"], r["mask_pixels"], r["slice"]) for r in alone
    ]
    assert alone[0]["box"] != alone[1]["box"]  # the two frames really differ
    assert max(r["reasoner_batch"] for r in together) > 1 and all(r["reasoner_batch"] == 1 for r in alone)


def server_info(server) -> dict:
    return requests.get(f"{server.url}/info/", timeout=30).json()


def test_ohif_request_on_a_2d_png(server, studies):
    response = ohif_infer(server, "implicit_query", XRAY_ID, {"question": QUESTION})
    assert response.status_code == 200, response.text
    path = studies.parent / "ohif_label.nrrd"
    path.write_bytes(response.content)
    assert b"encoding: raw" in response.content[:400]  # result_compress=false honoured
    label = read_medical_image(str(path))
    assert label.array.shape == xray_picture().shape and label.array.any()


def test_uploaded_file_is_grounded(server, tmp_path):
    upload = write_png(xray_picture(seed=7), tmp_path / "upload.png")
    label_file, result = slicer_infer(server, "implicit_query", "", {"question": QUESTION}, file=str(upload))
    assert result["status"] == "ok" and read_medical_image(label_file).array.shape == xray_picture().shape


def test_rgba_upload_is_grounded_without_alpha(server, tmp_path):
    rgba = np.dstack([np.repeat(xray_picture()[..., None], 3, axis=-1), np.full(xray_picture().shape, 255, np.uint8)])
    label_file, result = slicer_infer(
        server, "implicit_query", "", {"question": QUESTION}, file=str(write_png(rgba, tmp_path / "rgba.png"))
    )
    assert result["status"] == "ok" and read_medical_image(label_file).array.shape == rgba.shape[:2]


def expect_error(server, status, fragment, image_id=CT_ID, extra=None, file=None):
    with pytest.raises(MONAILabelClientException) as raised:
        slicer_infer(server, "implicit_query", image_id, extra or {"question": QUESTION}, file=file)
    assert f"Status: {status}" in raised.value.msg and fragment in raised.value.msg, raised.value.msg
    assert_serves(server)


def test_empty_question(server):
    expect_error(server, 422, "question is empty", extra={"question": "   "})


def test_question_over_the_limit(server):
    expect_error(server, 422, "the limit is 2000", extra={"question": "why " * 5000})


def test_unknown_image_id(server):
    expect_error(server, 404, "no-such-image", image_id="no-such-image")


def test_unknown_model(server):
    response = requests.post(f"{server.url}/infer/not_a_model", params={"image": CT_ID}, timeout=60)
    assert response.status_code == 404 and "not_a_model" in response.text
    assert_serves(server)


def test_corrupt_and_truncated_uploads(server, tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG not really")
    expect_error(server, 422, "corrupt", image_id="", file=str(garbage))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(write_ct(tmp_path / "whole.nii.gz").read_bytes()[:30000])
    expect_error(server, 422, "truncated", image_id="", file=str(truncated))


def test_4d_upload(server, tmp_path):
    itk.imwrite(itk.image_from_array(np.zeros((3, 8, 9, 2), np.float32), is_vector=True), str(tmp_path / "4d.nrrd"))
    expect_error(server, 422, "values per voxel", image_id="", file=str(tmp_path / "4d.nrrd"))


def test_slice_out_of_range(server):
    expect_error(server, 422, "out of range", extra={"question": QUESTION, "slice": 999})


def test_bad_window_and_result_format(server):
    expect_error(server, 422, "Unknown window", extra={"question": QUESTION, "window": "disco"})
    for bad_format in ({"result_extension": ".docx"}, {"result_dtype": "complex128"}):
        response = requests.post(
            f"{server.url}/infer/implicit_query",
            params={"image": XRAY_ID, "output": "image"},
            files={"params": (None, json.dumps({"question": QUESTION, **bad_format}))},
            timeout=60,
        )
        assert response.status_code == 422 and list(bad_format.values())[0] in response.text
    assert_serves(server)


def test_batch_inference_answers_every_image_through_the_same_path(server):
    """MONAI Label's batch inference (its subprocess calls the app's `infer` for each image) takes the same answer
    path as Slicer's request: each image gets its label saved under the tag and its answer kept."""
    question = "Which finding would explain the patient's cough?"
    started = requests.post(
        f"{server.url}/batch/infer/implicit_query",
        params={"images": "all"},
        json={"question": question, "label_tag": "batch", "max_new_tokens": 96},
        timeout=60,
    )
    assert started.status_code == 200, started.text
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = requests.get(f"{server.url}/batch/infer/", timeout=30).json()
        if status.get("status") in ("DONE", "ERROR", "STOPPED"):
            break
        time.sleep(2)
    assert status.get("status") == "DONE", status
    for image_id in (CT_ID, XRAY_ID):
        label = requests.get(
            f"{server.url}/datastore/label/info", params={"label": image_id, "tag": "batch"}, timeout=30
        )
        assert label.status_code == 200, label.text
        answer = label.json()["params"]
        assert answer["question"] == question and answer["status"] in ("ok", "no_grounding", "not_found")
        assert answer["answer_id"] and answer["reasoner_version"]["source"] == "configured"
        kept = requests.get(f"{server.url}/answers/{answer['answer_id']}", timeout=30)
        assert kept.status_code == 200 and kept.json()["image_id"] == image_id
    assert_serves(server)

"""The segmenter's image encoder on a CPU: OpenVINO, in bf16 where the CPU computes bf16, else fp32.

The image encoder is most of the segmenter's cost on a CPU (LiteMedSAM: 75 GFLOP per 256 px slice). Measured side by
side in one process (`benchmarks/segmenter_cpu.py`, `benchmarks/results/segmenter_cpu.txt`, docs/admin.md): OpenVINO
in bf16 was the fastest path at the same masks (IoU at 256 px and 3D Dice against fp32) and the steadiest when other
processes share the cores; torch's bf16 weights came close on a quiet machine only, `torch.compile` cost minutes to
compile, int8 lost speed or masks. The prompt encoder and mask decoder stay in torch, the decoder under bf16 autocast
when the encoder runs in bf16. Which path runs where (`resolve_encoder`):
- CPU, `auto`: `openvino-bf16` where OpenVINO reports the CPU computes BF16 (AVX-512 BF16 or AMX), else
  `openvino-fp32` (the same numbers as torch's fp32), else (no openvino) `torch-fp32`;
- CUDA: torch, as loaded.

The conversion (a trace and OpenVINO's converter: seconds to a minute on 2 cores) is not paid per start: the converted
model (OpenVINO IR: an XML graph and raw weights, nothing that runs code when read, never a pickle) is kept in a
server-owned folder, one entry per key (a SHA-256 of the encoder's weights, the torch and OpenVINO versions, the
encoder class and input size). Before an entry serves, its manifest must match the key, its files their recorded
SHA-256, and its output on a probe picture the fp32 encoder's (kept beside it when it was converted); otherwise it is
rebuilt. A kept entry is read, compiled and checked as the models load (about a second), so a server's first answer
already has the fast encoder; a conversion runs on a background thread while the fp32 encoder serves, and the
segmenter swaps the new encoder in under its lock.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)

ENCODER_CHOICES = ("auto", "openvino-bf16", "openvino-fp32", "torch-fp32")
TORCH_FP32 = "torch-fp32"
ARTIFACT_FORMAT = 1  # bump when the entry's layout or the conversion changes
MANIFEST, GRAPH, WEIGHTS, PROBE = "manifest.json", "encoder.xml", "encoder.bin", "probe_fp32.bin"
STORED_FILES = (GRAPH, WEIGHTS, PROBE)
PROBE_MIN_COSINE = 0.99  # measured bf16 against fp32: 0.999; a wrong or corrupt model is far below


def import_openvino() -> Any:
    """openvino, with its usage telemetry off: `import openvino` otherwise reports each import to Google Analytics
    from a child process unless the user's home holds an opt-out file (openvino_telemetry, on by default for its
    converter). Blocking the telemetry package makes openvino use its own no-op stub; nothing is written or sent."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # None in sys.modules: `import` raises ImportError
    import openvino

    return openvino


@functools.cache
def openvino_core() -> Any:
    """One OpenVINO runtime for the process, normally (two threads asking first at once may each make one, which is
    harmless); a Core may be used from several threads."""
    return import_openvino().Core()


def openvino_cpu_capabilities() -> Optional[list[str]]:
    """OpenVINO's own word on what this CPU computes (e.g. BF16, FP32, INT8); None without openvino."""
    try:
        core = openvino_core()
    except ImportError:
        return None
    return list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def resolve_encoder(choice: str, device: str) -> str:
    """The encoder that will run for `--conf segmenter_encoder choice` on `device`."""
    if choice not in ENCODER_CHOICES:
        raise ValueError(f"segmenter_encoder must be one of {', '.join(ENCODER_CHOICES)}, got {choice!r}")
    if not str(device).startswith("cpu"):
        return TORCH_FP32  # the GPU keeps the torch encoder it was loaded with
    if choice != "auto":
        return choice
    capabilities = openvino_cpu_capabilities()
    if capabilities is None:
        return TORCH_FP32
    return "openvino-bf16" if "BF16" in capabilities else "openvino-fp32"


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 over the module's tensors (names, dtypes, shapes, values), whatever file they came from; floating-point
    ones as fp32, as the conversion takes them: a kept entry is found whatever precision the encoder was loaded in."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        values = tensor.detach().cpu()
        values = (values.float() if values.is_floating_point() else values).contiguous()  # as the conversion sees it
        digest.update(f"{name}|{values.dtype}|{tuple(values.shape)}|".encode())
        digest.update(values.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def artifact_key(encoder: torch.nn.Module) -> dict:
    """What a converted encoder depends on: a stored entry serves only when all of it is equal."""
    openvino = import_openvino()
    return {
        "format": ARTIFACT_FORMAT,
        "weights_sha256": weights_digest(encoder),
        "encoder": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
        "input": list(probe_input(encoder).shape),
        "torch": torch.__version__,
        "openvino": openvino.get_version(),
    }


def entry_name(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def probe_input(encoder: torch.nn.Module) -> torch.Tensor:
    """A fixed picture at the encoder's input size (smooth gradients and seeded noise, as the preprocessing gives)."""
    size = int(encoder.img_size)
    ramp = torch.linspace(0.0, 1.0, size)
    noise = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    return (0.5 * (ramp[None, :, None] + ramp[None, None, :]) * 0.7 + 0.3 * noise)[None].float()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OpenVinoImageEncoder(torch.nn.Module):
    """The image encoder compiled by OpenVINO, with the torch module's interface (`img_size`, tensors in and out).
    One infer request, so callers serialise (the segmenter's lock does)."""

    def __init__(self, compiled: Any, img_size: int, path: str):
        super().__init__()
        self.img_size = img_size
        self.path = path  # e.g. openvino-bf16
        self.precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self._compiled = compiled
        self._request = compiled.create_infer_request()

    @torch.no_grad()
    def forward(self, pictures: torch.Tensor) -> torch.Tensor:
        outputs = []
        for picture in pictures.detach().float().cpu().split(1):
            self._request.infer({0: np.ascontiguousarray(picture.numpy())})
            outputs.append(torch.from_numpy(self._request.get_output_tensor(0).data.copy()))
        return torch.cat(outputs).to(pictures.device)


class Bf16MaskDecoder(torch.nn.Module):
    """The mask decoder under torch's bf16 autocast on the CPU, its outputs back in fp32 (what the predictors read)."""

    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, **inputs: Any) -> tuple:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return tuple(output.float() for output in self.decoder(**inputs))


def openvino_encoder(
    encoder: torch.nn.Module, path: str, folder: Optional[Path], look_for_kept: bool = True
) -> OpenVinoImageEncoder:
    """The encoder for `path` (openvino-bf16/-fp32): `folder`'s entry when it checks out (`kept_encoder`; not looked
    for again when the caller already did), else converted (and stored there); always checked on the probe picture
    against `encoder` before it is returned."""
    fast = kept_encoder(encoder, path, folder) if folder and look_for_kept else None
    if fast is not None:
        return fast
    reference = copy.deepcopy(encoder).float().cpu().eval()  # requests keep using `encoder` meanwhile
    model = convert(reference)
    with torch.no_grad():
        expected = reference(probe_input(reference))
    fast, cosine = _compiled(model, expected, path, int(reference.img_size))
    if cosine < PROBE_MIN_COSINE:
        raise RuntimeError(f"the {path} encoder does not agree with the fp32 encoder (probe cosine {cosine:.4f})")
    if folder:
        key = artifact_key(reference)
        write_entry(Path(folder) / entry_name(key), model, expected, key)  # only a model that passed the probe is kept
    logger.info(f"Segmenter encoder: {path}, converted (probe cosine {cosine:.4f} against fp32)")
    return fast


def kept_encoder(encoder: torch.nn.Module, path: str, folder: Path) -> Optional[OpenVinoImageEncoder]:
    """The encoder for `path` kept in `folder` for `encoder`'s weights, compiled, when its manifest, files and probe
    check out; None when there is none or it fails a check (said in the log). What a server's load waits for, so its
    first answer already has the fast encoder: about a second for LiteMedSAM on a quiet 2-core machine (compiling and
    probing a SAM ViT takes longer)."""
    key = artifact_key(encoder)
    entry = Path(folder) / entry_name(key)
    stored = read_entry(openvino_core(), entry, key)
    if stored is None:
        return None
    fast, cosine = _compiled(*stored, path, int(encoder.img_size))
    if cosine < PROBE_MIN_COSINE:
        logger.warning(f"Stored segmenter encoder {entry} disagrees with fp32 (probe cosine {cosine:.4f}); converting")
        return None
    logger.info(f"Segmenter encoder: {path}, stored in {entry} (probe cosine {cosine:.4f} against fp32)")
    return fast


def _compiled(model: Any, expected: torch.Tensor, path: str, img_size: int) -> tuple[OpenVinoImageEncoder, float]:
    """`model` compiled for this CPU at `path`'s precision, and its agreement with `expected` on the probe picture."""
    precision = "bf16" if path == "openvino-bf16" else "f32"
    options = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    fast = OpenVinoImageEncoder(openvino_core().compile_model(model, "CPU", options), img_size, path)
    return fast, probe_agreement(expected, fast)


def probe_agreement(expected: torch.Tensor, fast: OpenVinoImageEncoder) -> float:
    """Cosine between the fp32 encoder's embedding of the probe picture and `fast`'s."""
    got = fast(probe_input(fast))
    if got.shape != expected.shape:
        return -1.0
    return float(torch.nn.functional.cosine_similarity(expected.flatten(), got.flatten(), dim=0))


def convert(encoder: torch.nn.Module) -> Any:
    """Traced once (no re-run check: the probe check follows) and converted by OpenVINO's torch front end."""
    openvino = import_openvino()
    started = time.perf_counter()
    picture = probe_input(encoder)
    with torch.no_grad():
        traced = torch.jit.trace(encoder, picture, check_trace=False)
        model = openvino.convert_model(traced, example_input=picture)
    logger.info(f"Segmenter encoder converted to OpenVINO in {time.perf_counter() - started:.1f} s")
    return model


def read_entry(core: Any, entry: Path, key: dict) -> Optional[tuple[Any, torch.Tensor]]:
    """The stored model and the fp32 embedding of the probe picture, when the manifest names this key and the files
    are the ones recorded; else None (and why). Raw float32 and OpenVINO's IR: nothing here runs code when read."""
    if not (entry / MANIFEST).is_file():
        return None
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        if manifest.get("key") != key:
            raise ValueError("made for other weights or software versions")
        for name in STORED_FILES:
            if file_sha256(entry / name) != manifest["sha256"][name]:
                raise ValueError(f"{name} is not the file that was written")
        expected = torch.from_numpy(np.fromfile(entry / PROBE, dtype="<f4")).reshape(manifest["probe_shape"])
        return core.read_model(str(entry / GRAPH), str(entry / WEIGHTS)), expected
    except Exception as error:
        logger.warning(f"Stored segmenter encoder {entry} not used ({type(error).__name__}: {error}); converting")
        return None


def write_entry(entry: Path, model: Any, expected: torch.Tensor, key: dict) -> None:
    """Written in a temporary folder beside it and renamed into place: a reader sees a whole entry or none. A failed
    write only costs the next start a conversion."""
    openvino = import_openvino()
    staging = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = Path(tempfile.mkdtemp(prefix=".writing-", dir=entry.parent))
        openvino.save_model(model, str(staging / GRAPH), compress_to_fp16=False)
        expected.numpy().astype("<f4").tofile(staging / PROBE)
        digests = {name: file_sha256(staging / name) for name in STORED_FILES}
        manifest = {"key": key, "sha256": digests, "probe_shape": list(expected.shape)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(staging, entry)
    except Exception as error:
        logger.warning(f"Could not store the converted segmenter encoder in {entry}: {error}")
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def speed_up_encoder(segmenter: Any, choice: str, device: str, folder: Optional[str], background: bool = True) -> None:
    """Puts the encoder `choice` resolves to in place of `segmenter`'s torch fp32 one. With a `folder`, the caller's
    thread (the model load) imports openvino and looks there first: one kept by an earlier start is taken at once, so
    the first answer has it. A conversion (seconds to a minute) runs in the background while the fp32 encoder serves
    (without a `folder`, openvino's import too); `segmenter.encoder_ready` is set once the choice is settled. A failure
    is logged and leaves fp32 serving."""
    if choice not in ENCODER_CHOICES:
        raise ValueError(f"segmenter_encoder must be one of {', '.join(ENCODER_CHOICES)}, got {choice!r}")
    if choice == TORCH_FP32 or not str(device).startswith("cpu"):
        return
    encoder = segmenter.model.image_encoder

    def settle(kept_only: bool) -> bool:
        """True once the choice is settled (the fast encoder in place, or fp32 for good); False: nothing kept."""
        try:
            path = resolve_encoder(choice, device)
            if path == TORCH_FP32:
                return True
            if kept_only:
                fast = kept_encoder(encoder, path, Path(folder))
            else:  # in the background, the kept entry was looked for already (or there is no folder)
                fast = openvino_encoder(encoder, path, Path(folder) if folder else None, look_for_kept=not background)
            if fast is None:
                return False
            bf16 = path == "openvino-bf16"  # the decoder too: 7% off a slice at the same masks (measured)
            segmenter.use_image_encoder(fast, Bf16MaskDecoder(segmenter.model.mask_decoder) if bf16 else None)
        except Exception:
            logger.exception(f"The {choice} segmenter encoder could not be made; the torch fp32 encoder serves")
        return True

    def convert_and_swap() -> None:
        try:
            settle(kept_only=False)
        finally:
            segmenter.encoder_ready.set()

    segmenter.encoder_ready.clear()
    if not background:
        convert_and_swap()
    elif folder and settle(kept_only=True):
        segmenter.encoder_ready.set()
    else:
        # not a daemon: a process that ends while OpenVINO converts waits for it (seconds) and keeps the result; a
        # daemon thread still inside OpenVINO when the interpreter ends aborts the process (exit 134)
        threading.Thread(target=convert_and_swap, name="segmenter-encoder", daemon=False).start()

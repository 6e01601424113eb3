"""MONAI Label infer task `implicit_query`: a thin adapter from a MONAI Label request to the core grounding service.

Request keys used: `image` (a file or DICOM folder path the server resolved), `question`, `slice`, `window`,
`think`, `confidence_samples`, `result_extension`, `result_dtype`, `result_compress`. Errors are the app's taxonomy
(`monailabel_app.core.errors`): the request's fault (question, image, slice, window, format) is a RequestError, a
model that can't be had an UnavailableError; the server answers them as 4xx and 5xx with their message
(`lib/server/errors.py`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any, Dict, Optional, Tuple

from monailabel.interfaces.tasks.infer_v2 import InferTask

from monailabel_app.core.errors import RequestError
from monailabel_app.grounding.service import GroundingService
from monailabel_app.grounding.settings import parse_bool, parse_confidence_samples
from monailabel_app.imaging.medical_image import write_label

logger = logging.getLogger(__name__)

LABEL_NAME = "target"
RESULT_EXTENSIONS = (".nrrd", ".nii.gz", ".nii", ".mha", ".png")
RESULT_DTYPES = ("uint8", "uint16", "int16", "int32", "float32")
LEFTOVER_AGE_S = 3600


class ImplicitQueryInfer(InferTask):
    def __init__(self, service: GroundingService, type: str, dimension: int, description: str, config: Dict[str, Any]):
        super().__init__(type=type, labels={LABEL_NAME: 1}, dimension=dimension, description=description, config=config)
        self.service = service

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: Dict[str, Any]) -> Tuple[Optional[str], Dict[str, Any]]:
        defaults = {k: v[0] if isinstance(v, list) else v for k, v in self.config().items()}  # a list offers choices
        req = {**defaults, **request}
        extension, dtype, compress = _result_format(req)
        think = _flag("think", req["think"]) if "think" in req else None
        samples = _confidence_samples(req.get("confidence_samples"))
        grounded = self.service.ground_file(
            req.get("image"), req.get("question"), req.get("slice"), str(req.get("window") or "auto"), think, samples
        )
        if extension == ".png" and grounded.label.ndim == 3:
            raise RequestError("result_extension .png can only hold 2D labels; use .nrrd")
        label_path = tempfile.NamedTemporaryFile(suffix=extension, dir=_labels_dir(), delete=False).name
        write_started = time.perf_counter()
        write_label(grounded.label.astype(dtype), grounded.image, label_path, compress=compress)
        result = grounded.to_json()
        result["latencies"]["write_label"] = round(time.perf_counter() - write_started, 4)
        result["label_names"] = {LABEL_NAME: 1}
        result["window"] = str(req.get("window") or "auto")
        result["think"] = self.service.settings.think if think is None else think
        identity = self.service.reasoner_identity()  # which model answered: provenance for the saved label
        result["reasoner"] = identity["path"]
        result["reasoner_version"] = {k: identity[k] for k in ("source", "version", "sha256")}
        notice = self.service.notice()
        if notice:
            result["notice"] = notice
        return label_path, result


def _labels_dir() -> str:
    """Our own folder: a client on this machine saving into the system temp folder under the same name (MONAI Label's
    client keeps the server's file name) would otherwise race with the server's clean-up of that file."""
    folder = os.path.join(tempfile.gettempdir(), "medreasoner-labels")
    os.makedirs(folder, exist_ok=True)
    cutoff = time.time() - LEFTOVER_AGE_S  # a result whose request died before its route took it
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        try:
            if os.path.getmtime(path) < cutoff:
                os.unlink(path)
        except FileNotFoundError:
            pass
    return folder


def _result_format(req: Dict[str, Any]) -> Tuple[str, str, bool]:
    """What Slicer (`.nrrd`, `uint8`) and OHIF (also `result_compress=false`) ask for; refused clearly otherwise."""
    extension = str(req.get("result_extension") or ".nrrd").lower()[:40]
    extension = extension if extension.startswith(".") else "." + extension
    dtype = str(req.get("result_dtype") or "uint8").lower()[:40]
    if extension not in RESULT_EXTENSIONS:
        raise RequestError(f"result_extension {extension!r} is not supported; use one of {RESULT_EXTENSIONS}")
    if dtype not in RESULT_DTYPES:
        raise RequestError(f"result_dtype {dtype!r} is not supported; use one of {RESULT_DTYPES}")
    return extension, dtype, _flag("result_compress", req.get("result_compress", True))


def _confidence_samples(value: Any) -> Optional[int]:
    """The request's `confidence_samples` (0 = off, `auto` or empty = the server's); refused when not one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise RequestError(f"confidence_samples must be a whole number, got {str(value)[:40]!r}")
    raw = str(int(value)) if isinstance(value, (int, float)) else str(value).strip()[:40]
    try:
        return parse_confidence_samples("confidence_samples", raw)
    except ValueError as error:
        raise RequestError(str(error)) from None


def _flag(name: str, value: Any) -> bool:
    try:
        return parse_bool(name, str(value)[:40])
    except ValueError as error:
        raise RequestError(str(error).replace("--conf ", "")) from None

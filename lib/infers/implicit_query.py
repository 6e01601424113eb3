"""MONAI Label infer task `implicit_query`: a thin adapter from a MONAI Label request to the core grounding service.

Request keys used: `image` (a file or DICOM folder path the server resolved), `question`, `slice`, `scope`, `window`,
`think`, `confidence_samples`, `result_extension`, `result_dtype`, `result_compress`; on the point views (type
deepgrow) also `foreground` and `background` (voxel indices [i, j, k]; `grounding/clicks.py`), which join the clicks
the same user (`asked_by`, set by the server) made on that answer before; a request whose lists hold the same points
(OHIF's Run with *background* chosen) is answered with an empty label (OHIF would draw it into the background
segment) and `clicks_read_as_background: true`. The app's answers come here through `lib/infers/answering.py`
(`AnswerService`), which resolves the image, keeps the answer and saves the label; this task grounds and writes the
label. Errors are the app's taxonomy
(`monailabel_app.core.errors`): the request's fault (question, image, slice, window, format, clicks that contradict
each other) is a RequestError, a model that can't be had an UnavailableError; the server answers them as 4xx and 5xx
with their message (`lib/server/errors.py`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from datetime import datetime, timezone
from typing import Any, Dict, Optional, Tuple

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.common.scratch import process_folder
from lib.infers.answer_request import AnswerRequest, ImageRef
from monailabel_app.core.errors import RequestError
from monailabel_app.grounding.answer import Answer
from monailabel_app.grounding.clicks import PointPrompt
from monailabel_app.grounding.service import GroundingService
from monailabel_app.grounding.settings import parse_bool, parse_confidence_samples
from monailabel_app.imaging.medical_image import write_label

logger = logging.getLogger(__name__)

LABEL_NAME = "target"
RESULT_EXTENSIONS = (".nrrd", ".nii.gz", ".nii", ".mha", ".png")
RESULT_DTYPES = ("uint8", "uint16", "int16", "int32", "float32")
PNG_DTYPES = ("uint8", "uint16")  # what a PNG's pixels can be
LEFTOVER_AGE_S = 3600


class ImplicitQueryInfer(InferTask):
    def __init__(self, service: GroundingService, type: str, dimension: int, description: str, config: Dict[str, Any]):
        super().__init__(type=type, labels={LABEL_NAME: 1}, dimension=dimension, description=description, config=config)
        self.service = service

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: Dict[str, Any]) -> Tuple[Optional[str], Dict[str, Any]]:
        """MONAI Label's interface of a task called on its own (the label file and the result JSON). The app never
        calls it: its answers take `AnswerService.answer`, which also keeps them."""
        image = ImageRef(str(request.get("image")), request.get("image_id"))
        asked = AnswerRequest(str(request.get("model")), image, request, request.get("asked_by"))
        answer, label_path = self.ground(asked, labels_dir())
        return label_path, answer.to_json()

    def ground(self, request: AnswerRequest, label_dir: str) -> Tuple[Answer, str]:
        """Grounds the question on the image and writes the label, once, into `label_dir`."""
        defaults = {k: v[0] if isinstance(v, list) else v for k, v in self.config().items()}  # a list offers choices
        req = {**defaults, **request.params}
        extension, dtype, compress = _result_format(req)
        think = _flag("think", req["think"]) if "think" in req else None
        samples = _confidence_samples(req.get("confidence_samples"))
        scope = str(req.get("scope") or "slice")[:40]
        window = str(req.get("window") or "auto")
        points = None
        if self.type == InferType.DEEPGROW:  # a point panel: its clicks refine the answer (or choose the slice)
            points = PointPrompt(req.get("foreground"), req.get("background"), str(request.asked_by or ""))
        grounded = self.service.ground_file(
            request.image.path, req.get("question"), req.get("slice"), window, think, samples, scope, points
        )
        if extension == ".png" and grounded.label.ndim == 3:
            raise RequestError("result_extension .png can only hold 2D labels; use .nrrd")
        as_background = grounded.clicks is not None and grounded.clicks.read_as_background  # parse_clicks' decision
        # OHIF's Run with *background* chosen draws the label into the background segment, over empty pixels only:
        # the corrected mask would show as stray pixels beside the answer's segment. Sent empty, it changes nothing;
        # the clicks are remembered, and the next Run with the answer's segment chosen draws the corrected mask.
        label = np.zeros_like(grounded.label) if as_background else grounded.label
        label_path = tempfile.NamedTemporaryFile(suffix=extension, dir=label_dir, delete=False).name
        write_started = time.perf_counter()
        write_label(label.astype(dtype), grounded.image, label_path, compress=compress)
        identity = grounded.result.reasoner_identity or {}
        answer = Answer(
            grounded,
            window=window,
            think=self.service.settings.think if think is None else think,
            answered_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            notice=self.service.notice(identity.get("path")),
            instance_number=_instance_number(request.instance_numbers, grounded.slice_index),
            clicks_read_as_background=as_background if points is not None else None,
            write_label_s=time.perf_counter() - write_started,
        )
        return answer, label_path


def _instance_number(numbers: Any, slice_index: Optional[int]) -> Optional[int]:
    """The DICOM InstanceNumber of the answered slice of a PACS series (the server's own list, never a client's)."""
    if slice_index is None or not isinstance(numbers, list) or not 0 <= slice_index < len(numbers):
        return None
    return numbers[slice_index]


def labels_dir() -> str:
    """Where a label is written for MONAI Label's own callers (the infer route writes into the request's scratch
    folder). Our own folder: a client on this machine saving into the system temp folder under the same name (MONAI
    Label's client keeps the server's file name) would otherwise race with the server's clean-up of that file. This
    process's (`lib/common/scratch.py`), so the server removes it when it stops."""
    folder = str(process_folder("labels"))
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
    if extension == ".png" and dtype not in PNG_DTYPES:  # refused before the work, not by the writer after it
        raise RequestError(f"result_extension .png holds {' or '.join(PNG_DTYPES)} labels, not {dtype}; use .nrrd")
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
        raise RequestError(str(error)) from None

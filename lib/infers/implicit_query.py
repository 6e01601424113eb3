"""MONAI Label infer task `implicit_query`: a thin adapter from a MONAI Label request to the core grounding service.

Request keys used: `image` (a file or DICOM folder path the server resolved), `question`, `slice`, `scope`, `window`,
`think`, `confidence_samples`, `result_extension`, `result_dtype`, `result_compress`; on the point views (type
deepgrow) also `foreground` and `background` (voxel indices [i, j, k]; `grounding/clicks.py`), which join the clicks
the same user (`asked_by`, set by the server) made on that answer before; a request whose lists hold the same points
(OHIF's Run with *background* chosen) is answered with an empty label (OHIF would draw it into the background
segment) and `clicks_read_as_background: true`. Errors are the app's taxonomy
(`monailabel_app.core.errors`): the request's fault (question, image, slice, window, format, clicks that contradict
each other) is a RequestError, a model that can't be had an UnavailableError; the server answers them as 4xx and 5xx
with their message (`lib/server/errors.py`). A RequestError is also kept with the answer log's recent refusals, so
OHIF's answer panel can say why a Run failed (OHIF itself shows only "Failed to Run Segmentation").
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
from monailabel_app.core.errors import RequestError
from monailabel_app.grounding.answer_log import AnswerLog
from monailabel_app.grounding.answer_picture import draw_answer
from monailabel_app.grounding.clicks import PointPrompt
from monailabel_app.grounding.image_grounding import GroundedImage
from monailabel_app.grounding.records import AnswerRecord
from monailabel_app.grounding.service import GroundingService
from monailabel_app.grounding.settings import parse_bool, parse_confidence_samples
from monailabel_app.imaging.medical_image import write_label

logger = logging.getLogger(__name__)

LABEL_NAME = "target"
RESULT_EXTENSIONS = (".nrrd", ".nii.gz", ".nii", ".mha", ".png")
RESULT_DTYPES = ("uint8", "uint16", "int16", "int32", "float32")
LEFTOVER_AGE_S = 3600
SEGMENT_QUESTION_CHARS = 80


class ImplicitQueryInfer(InferTask):
    def __init__(
        self,
        service: GroundingService,
        answer_log: AnswerLog,
        type: str,
        dimension: int,
        description: str,
        config: Dict[str, Any],
    ):
        super().__init__(type=type, labels={LABEL_NAME: 1}, dimension=dimension, description=description, config=config)
        self.service = service
        self.answer_log = answer_log

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: Dict[str, Any]) -> Tuple[Optional[str], Dict[str, Any]]:
        try:
            return self._answer(request)
        except RequestError as refused:  # the viewer may not show the message: the answer panel can
            study = request.get("study_uid")
            self.answer_log.refusals.add(
                str(refused), request.get("model"), request.get("image_id"), study, request.get("asked_by")
            )
            raise

    def _answer(self, request: Dict[str, Any]) -> Tuple[Optional[str], Dict[str, Any]]:
        started = time.perf_counter()
        defaults = {k: v[0] if isinstance(v, list) else v for k, v in self.config().items()}  # a list offers choices
        req = {**defaults, **request}
        extension, dtype, compress = _result_format(req)
        think = _flag("think", req["think"]) if "think" in req else None
        samples = _confidence_samples(req.get("confidence_samples"))
        scope = str(req.get("scope") or "slice")[:40]
        points = None
        if self.type == InferType.DEEPGROW:  # a point panel: its clicks refine the answer (or choose the slice)
            points = PointPrompt(req.get("foreground"), req.get("background"), str(req.get("asked_by") or ""))
        grounded = self.service.ground_file(
            req.get("image"),
            req.get("question"),
            req.get("slice"),
            str(req.get("window") or "auto"),
            think,
            samples,
            scope,
            points,
        )
        if extension == ".png" and grounded.label.ndim == 3:
            raise RequestError("result_extension .png can only hold 2D labels; use .nrrd")
        as_background = grounded.clicks is not None and grounded.clicks.read_as_background  # parse_clicks' decision
        # OHIF's Run with *background* chosen draws the label into the background segment, over empty pixels only:
        # the corrected mask would show as stray pixels beside the answer's segment. Sent empty, it changes nothing;
        # the clicks are remembered, and the next Run with the answer's segment chosen draws the corrected mask.
        label = np.zeros_like(grounded.label) if as_background else grounded.label
        label_path = tempfile.NamedTemporaryFile(suffix=extension, dir=_labels_dir(), delete=False).name
        write_started = time.perf_counter()
        write_label(label.astype(dtype), grounded.image, label_path, compress=compress)
        result = grounded.to_json()
        result["latencies"]["write_label"] = round(time.perf_counter() - write_started, 4)
        result["window"] = str(req.get("window") or "auto")
        result["think"] = self.service.settings.think if think is None else think
        identity = self.service.reasoner_identity()  # which model answered: provenance for the saved label
        result["reasoner"] = identity["path"]
        result["reasoner_version"] = {k: identity[k] for k in ("source", "version", "sha256")}
        notice = self.service.notice()
        if notice:
            result["notice"] = notice
        result["label_names"] = {segment_name(result): 1}
        result["instance_number"] = _instance_number(req.get("instance_numbers"), grounded.slice_index)
        if points is not None:
            result["clicks_read_as_background"] = as_background  # and the label sent empty
        result["answered_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        result["answer_id"] = self._keep_for_audit(request, grounded, result, time.perf_counter() - started)
        return label_path, result

    def _keep_for_audit(self, request: Dict[str, Any], grounded: GroundedImage, result: Dict[str, Any], took: float):
        """Every answer goes to the answer log (`grounding/answer_log.py`) with the picture the model saw; a log that
        can't be written (disk full) costs the audit entry, never the clinician's result."""
        entry = {
            **AnswerRecord.from_result(result).to_info(),
            "model": request.get("model"),
            "image_id": request.get("image_id"),
            "study_uid": request.get("study_uid"),
            "asked_by": request.get("asked_by"),
            "reason": result.get("reason"),
            "mask_pixels": result.get("mask_pixels"),
            "num_slices": grounded.image.num_slices if grounded.image.is_volume else None,
            "propagation": result.get("propagation"),
            "reasoner_called": result.get("reasoner_called"),
            "instance_number": result.get("instance_number"),
            "clicks_read_as_background": result.get("clicks_read_as_background"),
            "latency_s": round(took, 3),
            "notice": result.get("notice"),
        }
        try:
            picture = None
            if grounded.picture is not None:
                picture = draw_answer(grounded.picture, grounded.result.mask, result.get("box"), result.get("points"))
            return self.answer_log.add(entry, picture)
        except OSError as error:
            logger.error(f"The answer could not be kept in the answer log: {error}")
            return None


def _instance_number(numbers: Any, slice_index: Optional[int]) -> Optional[int]:
    """The DICOM InstanceNumber of the answered slice of a PACS series (the server's own list, never a client's:
    `instance_numbers` is among the keys a request can't set)."""
    if slice_index is None or not isinstance(numbers, list) or not 0 <= slice_index < len(numbers):
        return None
    return numbers[slice_index]


def segment_name(result: Dict[str, Any]) -> str:
    """The label's name, which Slicer shows as the segment's name (from the result's `label_names`): the answer in a
    few words, so the segment list says what was asked and whether the model found it."""
    question = " ".join(str(result.get("question") or "").replace("\\", "/").split())
    question = "".join(c for c in question if c.isprintable())
    short = question if len(question) <= SEGMENT_QUESTION_CHARS else question[: SEGMENT_QUESTION_CHARS - 1] + "…"
    if result.get("status") == "not_found":
        return f"Not in this image: {short}"
    if result.get("status") != "ok":
        return f"No grounding: {short}"
    confidence = result.get("confidence")
    notes = [f"{round(100 * confidence)}% consistent"] if isinstance(confidence, (int, float)) else []
    clicks = result.get("refined_by_clicks")
    if clicks:
        count = len(clicks["foreground"]) + len(clicks["background"])
        notes.append(f"refined by {count} click{'' if count == 1 else 's'}")
    return f"Answer{' (' + ', '.join(notes) + ')' if notes else ''}: {short}"


def _labels_dir() -> str:
    """Our own folder: a client on this machine saving into the system temp folder under the same name (MONAI Label's
    client keeps the server's file name) would otherwise race with the server's clean-up of that file. This process's
    (`lib/common/scratch.py`), so the server removes it when it stops."""
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

"""The one path of an answer, in the order it happens: the model checked once, the image's context read once, the
question grounded and the label written once, the answer kept once (the answer log, then the image's info), the label
saved in the datastore when asked. The infer route and MONAI Label's own callers (`main.py` `infer`: batch inference)
both take it; the answer stays a typed `Answer` until the route (or `main.py`) turns it into JSON.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Callable, Dict, Mapping, Optional

from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.common.identifiers import check_tag
from lib.datastore.label_store import LabelStore
from lib.infers.answer_request import AnswerRequest, ImageRef
from lib.infers.implicit_query import ImplicitQueryInfer
from monailabel_app.core.errors import NotFoundError, RequestError
from monailabel_app.grounding.answer import Answer
from monailabel_app.grounding.answer_log import AnswerLog
from monailabel_app.grounding.answer_picture import draw_answer
from monailabel_app.grounding.confidence_book import CONFIDENCE_KEY, reasoner_key, with_entry
from monailabel_app.grounding.last_answers import LAST_ANSWERS_KEY, last_answer, with_last_answer

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Model:
    """A model the server has (`AnswerService.model`): its name and its infer task."""

    name: str
    task: ImplicitQueryInfer


@dataclasses.dataclass(frozen=True)
class LabelSave:
    """A request's `save_label`: the tag (never `final`: checked at the route) and who saved it."""

    tag: str
    saved_by: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class Answered:
    answer: Answer
    json: dict  # the answer as the client reads it (serialised once)
    label_file: str  # in the folder the caller gave; the caller removes it
    saved_label: Optional[str] = None  # the datastore's label id when the label was saved


class AnswerService:
    def __init__(
        self,
        tasks: Mapping[str, ImplicitQueryInfer],
        answer_log: Optional[AnswerLog],
        datastore: Callable[[], LabelStore],
        image_info_lock: threading.RLock,
    ):
        """`image_info_lock` is held around every read-merge-write of an image's info: two clinicians answered at
        once each keep their answer."""
        self._tasks: Dict[str, ImplicitQueryInfer] = dict(tasks)
        self._log = answer_log
        self._datastore = datastore
        self._image_info_lock = image_info_lock

    def model(self, name: str) -> Model:
        """The one check that the model exists (404 otherwise), done where a request comes in."""
        task = self._tasks.get(name)
        if task is None:
            raise NotFoundError(f"No model {str(name)[:80]!r}; available: {', '.join(self._tasks)}")
        return Model(name, task)

    def answer(
        self,
        model: Model,
        image: ImageRef,
        params: Mapping,
        asked_by: Optional[str],
        label_dir: str,
        save: Optional[LabelSave] = None,
    ) -> Answered:
        store = self._datastore()
        request = self._with_image_context(store, model.task, AnswerRequest(model.name, image, params, asked_by))
        started = time.perf_counter()
        try:
            answer, label_file = model.task.ground(request, label_dir)
        except RequestError as refused:  # the viewer may not show the message: OHIF's answer panel can
            if self._log is not None:
                self._log.refusals.add(str(refused), request.model, image.image_id, request.study_uid, asked_by)
            raise
        try:
            answer = self._keep_for_audit(request, answer, time.perf_counter() - started)
            payload = answer.to_json()
            saved = None
            if save is not None and image.image_id:
                info = {"model": request.model, "params": payload, **save.saved_by}
                saved = store.save_label(image.image_id, label_file, check_tag(save.tag), info)
            if image.image_id:
                self._remember_on_image(store, image.image_id, answer, asked_by)
        except BaseException:
            if os.path.isfile(label_file):
                os.unlink(label_file)  # nobody will fetch it: the request failed
            raise
        return Answered(answer, payload, label_file, saved)

    def _with_image_context(self, store: LabelStore, task: ImplicitQueryInfer, request: AnswerRequest) -> AnswerRequest:
        """For a datastore image: its study and slice numbers (a PACS series), and for a point panel's clicks with no
        question, the question this clinician last asked of it."""
        image_id = request.image.image_id
        if not image_id:
            return request
        numbers = store.instance_numbers(image_id)  # None for a folder's file
        continues = task.type == InferType.DEEPGROW and not str(request.params.get("question") or "").strip()
        if numbers is None and not continues:
            return request  # nothing to read: a folder image asked with a question (the info read costs a listing)
        info = store.get_image_info(image_id) or {}
        if numbers is not None:  # a PACS series: its study, and its slices named as the viewer does
            request = dataclasses.replace(request, study_uid=info.get("StudyInstanceUID"), instance_numbers=numbers)
        if not continues:
            return request
        # OHIF's point prompts send no question; Slicer's point panel has its own, often empty, text box: the clicks
        # correct this clinician's last answer (its question, window and think flag), never another's
        last = last_answer(info, request.asked_by)
        if not last.get("question"):
            return request
        continued = {k: last[k] for k in ("question", "window", "think") if last.get(k) is not None}
        return dataclasses.replace(request, params={**request.params, **continued})

    def _keep_for_audit(self, request: AnswerRequest, answer: Answer, took: float) -> Answer:
        """Every answer goes to the answer log (`grounding/answer_log.py`) with the picture the model saw; a log that
        can't be written (disk full) costs the audit entry, never the clinician's result."""
        if self._log is None:
            return answer
        grounded, result, record = answer.grounded, answer.result, answer.record()
        entry = {
            **record.to_info(),
            "model": request.model,
            "image_id": request.image.image_id,
            "study_uid": request.study_uid,
            "asked_by": request.asked_by,
            "reason": result.reason,
            "mask_pixels": None if result.mask is None else int(result.mask.sum()),
            "num_slices": grounded.image.num_slices if grounded.image.is_volume else None,
            "propagation": grounded.propagation.to_json(grounded.slice_index) if grounded.propagation else None,
            "reasoner_called": result.reasoner_called,
            "instance_number": answer.instance_number,
            "clicks_read_as_background": answer.clicks_read_as_background,
            "latency_s": round(took, 3),
            "notice": answer.notice,
        }
        try:
            picture = None
            if grounded.picture is not None:
                picture = draw_answer(grounded.picture, result.mask, record.box, record.points)
            return dataclasses.replace(answer, answer_id=self._log.add(entry, picture))
        except OSError as error:
            logger.error(f"The answer could not be kept in the answer log: {error}")
            return answer

    def _remember_on_image(self, store: LabelStore, image_id: str, answer: Answer, asked_by: Optional[str]) -> None:
        """The image's info keeps each clinician's last answer (for the label they save next) and, with a confidence,
        the confidence book's entry `least_confident` ranks by: one read-merge-write of the datastore's index."""
        with self._image_info_lock:
            current = store.get_image_info(image_id)
            info = {LAST_ANSWERS_KEY: with_last_answer(current, asked_by, answer.record().to_info())}
            if answer.confidence is not None:
                reasoner = reasoner_key({"sha256": answer.reasoner.get("sha256"), "path": answer.reasoner.get("path")})
                info[CONFIDENCE_KEY] = with_entry(
                    current, answer.result.question, answer.confidence, reasoner, "answer"
                )
            store.update_image_info(image_id, info)

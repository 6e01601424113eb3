"""An answer, typed from the grounding to the HTTP edge: what was grounded, how it was asked, which model gave it and
where the answer log keeps it.

It is serialised once, where it leaves the server (`to_json`: the result JSON Slicer and OHIF read). The record a
saved label keeps (`record()`) and the answer log's entry are read from the object, never parsed back from that JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from monailabel_app.grounding.image_grounding import LABEL_VALUE, GroundedImage
from monailabel_app.grounding.pipeline import STATUS_NOT_FOUND, STATUS_OK, GroundingResult, clicks_json, rounded
from monailabel_app.grounding.records import AnswerRecord

SEGMENT_QUESTION_CHARS = 80


@dataclass(frozen=True)
class Answer:
    grounded: GroundedImage
    window: str  # as asked (`auto` or a named window): training renders the slice the same way
    think: bool
    answered_at: str  # UTC, ISO 8601 to the second
    notice: Optional[str] = None  # said with every answer of a tiny demo reasoner
    instance_number: Optional[int] = None  # the answered slice's DICOM InstanceNumber (a PACS series)
    clicks_read_as_background: Optional[bool] = None  # a point panel's request only: its label is sent empty
    write_label_s: Optional[float] = None
    answer_id: Optional[str] = None  # its entry in the answer log, once kept there

    @property
    def result(self) -> GroundingResult:
        return self.grounded.result

    @property
    def reasoner(self) -> dict:
        """The model that gave it: {path, source, version, sha256}, taken when that model was loaded."""
        return self.result.reasoner_identity or {}

    @property
    def confidence(self) -> Optional[float]:
        return None if self.result.confidence is None else round(self.result.confidence.value, 4)

    def record(self) -> AnswerRecord:
        """What an image's last answer and the label saved from it keep (`records.py`)."""
        result = self.result
        return AnswerRecord(
            question=result.question,
            slice=self.grounded.slice_index,
            window=self.window,
            think=self.think,
            reasoner=self.reasoner.get("path"),
            reasoner_version=self._version(),
            status=result.status,
            reasoning=result.reasoning,
            raw_text=result.raw_text,
            box=rounded(result.box),
            points=[rounded(p) for p in result.points] if result.points else None,
            confidence=self.confidence,
            answered_at=self.answered_at,
            answer_id=self.answer_id,
            refined_by_clicks=clicks_json(result.refined_by),
        )

    def segment_name(self) -> str:
        """The label's name, which Slicer shows as the segment's name: the answer in a few words, so the segment list
        says what was asked and whether the model found it."""
        question = " ".join(self.result.question.replace("\\", "/").split())
        question = "".join(c for c in question if c.isprintable())
        short = question if len(question) <= SEGMENT_QUESTION_CHARS else question[: SEGMENT_QUESTION_CHARS - 1] + "…"
        if self.result.status == STATUS_NOT_FOUND:
            return f"Not in this image: {short}"
        if self.result.status != STATUS_OK:
            return f"No grounding: {short}"
        notes = [f"{round(100 * self.confidence)}% consistent"] if self.confidence is not None else []
        clicks = self.result.refined_by
        if clicks:
            notes.append(f"refined by {len(clicks)} click{'' if len(clicks) == 1 else 's'}")
        return f"Answer{' (' + ', '.join(notes) + ')' if notes else ''}: {short}"

    def to_json(self) -> dict:
        """The result JSON (once, at the edge): the grounding's, with voxel indices for volumes, and the answer's."""
        data = self.grounded.to_json()
        if self.write_label_s is not None:
            data["latencies"]["write_label"] = round(self.write_label_s, 4)
        data.update(window=self.window, think=self.think, reasoner=self.reasoner.get("path"))
        data["reasoner_version"] = self._version()
        if self.notice:
            data["notice"] = self.notice
        data["label_names"] = {self.segment_name(): LABEL_VALUE}
        data["instance_number"] = self.instance_number
        if self.clicks_read_as_background is not None:
            data["clicks_read_as_background"] = self.clicks_read_as_background
        data.update(answered_at=self.answered_at, answer_id=self.answer_id)
        return data

    def _version(self) -> dict:
        return {key: self.reasoner.get(key) for key in ("source", "version", "sha256")}

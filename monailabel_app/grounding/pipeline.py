"""One implicit question about one 2D picture: reasoner -> parser -> frozen segmenter -> `GroundingResult`.

A reasoner answer that can't be used is a result (status `no_grounding`, with the raw text and the reason), not an
error: the clinician sees what the model said. Errors are kept for what the user must fix (question, image) or the
admin must (models).

Corrective clicks (`clicks.py`) on a picture already answered for the same prompt by the same reasoner don't ask the
reasoner again (`answer_cache.py`): its answer is kept, the clicks move the answer's box (`box_with_clicks`) and join
its points as positive and negative points. The earlier mask's logits are not fed back: with LiteMedSAM they pulled
the mask back towards the very region a background click removed (docs/clinician.md, Correct with clicks). The
clicks that came with the question when it was first answered only chose the slice (Slicer resends every click on
the slice with each request): they never become prompts. Each clinician's clicks on an answer accumulate
(`ClickMemory`): a request's clicks join those the same clinician made on that answer before, so OHIF's Run with
*background* chosen, which sends no foreground click, keeps the earlier foreground clicks.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from monailabel_app.core.frames import ImageFrame
from monailabel_app.grounding.answer_cache import AnswerCache, CachedAnswer
from monailabel_app.grounding.clicks import Click, ClickMemory, box_with_clicks
from monailabel_app.reasoning.answer_parser import parse_answer
from monailabel_app.reasoning.prompt import build_prompt
from monailabel_app.reasoning.reasoner import Reasoner, ReasonerOutput
from monailabel_app.reasoning.self_consistency import Confidence, score_agreement
from monailabel_app.segmentation.segmenter import Segmenter

STATUS_OK = "ok"
STATUS_NO_GROUNDING = "no_grounding"
STATUS_NOT_FOUND = "not_found"  # the model says the target is not in this image (`answer_parser.py`): no mask


@dataclass
class GroundingResult:
    """Box and points are in pixels of the original picture; `mask` is bool (H, W) of it, None without grounding."""

    status: str
    question: str
    raw_text: str
    frame: ImageFrame
    reasoning: Optional[str] = None
    box: Optional[tuple[float, float, float, float]] = None
    points: Optional[list[tuple[float, float]]] = None
    mask: Optional[np.ndarray] = None
    mask_score: Optional[float] = None
    mask_logits: Optional[np.ndarray] = None  # the segmenter's low-resolution logits of `mask` (a next prompt's input)
    embedding_cached: Optional[bool] = None  # True when the segmenter reused this picture's image embedding
    reason: Optional[str] = None
    warnings: list[str] = field(default_factory=list)
    latencies: dict[str, float] = field(default_factory=dict)
    confidence: Optional[Confidence] = None  # self-consistency, when asked for (`reasoning/self_consistency.py`)
    confidence_note: Optional[str] = None  # why there is none although it was asked for
    reasoner_batch: int = 1  # questions that shared the reasoner's generate call (batched serving)
    reasoner_called: bool = True  # False when the answer was reused (clicks refining an earlier answer)
    refined_by: Optional[tuple[Click, ...]] = None  # the clicks that corrected the answer's mask
    clicks_chose_slice: int = 0  # clicks that only chose the slice the question was asked on
    refined_box: Optional[tuple[float, float, float, float]] = None  # the answer's box as the clicks moved it
    answer_ref: Optional[str] = None  # names the reasoner's answer that clicks refine (their `ClickMemory` key)
    reasoner_identity: Optional[dict] = None  # the model that answered (`reasoner_slot.ServingReasoner.identity`)

    def to_json(self) -> dict:
        """Everything but the mask, JSON-ready (rounded to 0.01 px / 0.1 ms)."""
        return {
            "status": self.status,
            "question": self.question,
            "reasoning": self.reasoning,
            "raw_text": self.raw_text,
            "box": rounded(self.box),
            "points": [rounded(p) for p in self.points] if self.points else None,
            "mask_score": None if self.mask_score is None else round(self.mask_score, 4),
            "mask_pixels": None if self.mask is None else int(self.mask.sum()),
            "embedding_cached": self.embedding_cached,
            "reason": self.reason,
            "warnings": list(self.warnings),
            "model_frame": {"width": self.frame.model_width, "height": self.frame.model_height},
            "latencies": {k: round(v, 4) for k, v in self.latencies.items()},
            "reasoner_batch": self.reasoner_batch,
            "confidence": None if self.confidence is None else round(self.confidence.value, 4),
            "confidence_detail": self.confidence.to_json() if self.confidence else _note(self.confidence_note),
            "reasoner_called": self.reasoner_called,
            "refined_by_clicks": clicks_json(self.refined_by),
            "refined_box": rounded(self.refined_box),
            "clicks_chose_slice": self.clicks_chose_slice,
        }


class GroundingPipeline:
    def __init__(
        self,
        reasoner: Reasoner,
        segmenter: Segmenter,
        think: bool = True,
        template_path: Optional[str] = None,
        reasoner_identity: Optional[dict] = None,
    ):
        self._serving = (reasoner, reasoner_identity)  # swapped as one, so an answer names the model that gave it
        self.segmenter = segmenter
        self.think = think
        self.template_path = template_path
        self.answers = AnswerCache()
        self.clicks = ClickMemory()  # each clinician's clicks on each cached answer
        self.generation = 0  # which reasoner answered a cached answer

    @property
    def reasoner(self) -> Reasoner:
        return self._serving[0]

    def use_reasoner(self, reasoner: Reasoner, identity: Optional[dict] = None) -> None:
        """The one way to change the serving reasoner: answers the old one gave are never reused after."""
        if reasoner is not self.reasoner:
            self.generation += 1
            self.answers.clear()
        self._serving = (reasoner, identity)

    def ground(
        self,
        image: np.ndarray,
        question: str,
        think: Optional[bool] = None,
        confidence_samples: int = 0,
        confidence_temperature: float = 1.0,
        clicks: Optional[tuple[Click, ...]] = None,
        asker: str = "",
    ) -> GroundingResult:
        """`image` is RGB uint8 (H, W, 3). Raises only for a bad question, clicks that contradict each other or a
        broken model, never for a bad answer.

        `confidence_samples` > 0 also samples that many answers in the same generate call and scores the answer's
        self-consistency; a backend that can't (no `generate_with_samples`) says so in `confidence_note`.
        `clicks` (a point panel's request, possibly none on this slice) refine this prompt's earlier answer on this
        picture when there is one, joined with the clicks `asker` made on it before; None (the auto-segmentation
        panel) always asks the reasoner."""
        prompt = build_prompt(question, self.think if think is None else think, self.template_path)
        key, generation = AnswerCache.key(image, prompt), self.generation
        cached = self.answers.get(key, generation) if clicks is not None else None
        if cached is not None:
            return self._refine(image, cached, clicks, asker)
        result = self._ask(image, question, prompt, confidence_samples, confidence_temperature)
        result.clicks_chose_slice = len(clicks or ())
        result.answer_ref = secrets.token_hex(8)  # a new answer: no clicks remembered on it yet
        kept = replace(result, warnings=list(result.warnings))  # the caller may add warnings to its own copy
        self.answers.put(key, CachedAnswer(kept, frozenset(clicks or ()), generation))
        return result

    def _refine(
        self, image: np.ndarray, cached: CachedAnswer, clicks: tuple[Click, ...], asker: str
    ) -> GroundingResult:
        """The cached answer with every click in effect on it (this request's and `asker`'s earlier ones) in the
        segmenter's prompt; the reasoner is not called."""
        started = time.perf_counter()
        answer = cached.result
        new = tuple(click for click in clicks if click not in cached.chose_slice)
        applied = self.clicks.add(answer.answer_ref or "", asker, new, cached.chose_slice)
        result = replace(
            answer,
            warnings=list(answer.warnings),
            reasoner_called=False,
            refined_by=applied or None,
            clicks_chose_slice=len(clicks) - len(new),
            reasoner_batch=1,
        )
        if not applied:  # no click but those that chose the slice: the answer and its mask
            result.latencies = {"total": time.perf_counter() - started}
            return result
        box = box_with_clicks(answer.box, list(answer.points or []), applied)
        if box is None:
            result.warnings.append("add a foreground click: the answer had no box, and background clicks mark nothing")
            result.latencies = {"total": time.perf_counter() - started}
            return result
        points = list(answer.points or []) + [(c.x, c.y) for c in applied]
        labels = [1] * len(answer.points or []) + [int(c.foreground) for c in applied]
        segmented = self.segmenter.segment(image, box=box, points=points, labels=labels)
        result.refined_box = box
        result.mask = segmented.mask.astype(bool)
        result.mask_score = float(segmented.score)
        result.mask_logits = segmented.low_res_logits
        result.embedding_cached = segmented.cache_hit
        if answer.status != STATUS_OK:
            result.status = STATUS_OK
            result.warnings.append("the mask comes from your clicks alone: the model's answer had no usable box")
        if not result.mask.any():
            result.warnings.append("the segmenter returned an empty mask for this answer and these clicks")
        result.latencies = {
            "segmenter_encode": segmented.encode_s,
            "segmenter_decode": segmented.decode_s,
            "total": time.perf_counter() - started,
        }
        return result

    def _ask(
        self, image: np.ndarray, question: str, prompt: str, confidence_samples: int, confidence_temperature: float
    ) -> GroundingResult:
        started = time.perf_counter()
        reasoner, identity = self._serving
        answer, sampled, note = _answers(reasoner, image, prompt, confidence_samples, confidence_temperature)
        parse_started = time.perf_counter()
        frame = answer.frame
        parsed = parse_answer(answer.text, frame.model_width, frame.model_height)
        result = GroundingResult(
            status=STATUS_NO_GROUNDING,
            question=question.strip(),
            raw_text=answer.text,
            frame=frame,
            reasoning=parsed.think,
            reason=parsed.reason,
            warnings=list(parsed.warnings),
            reasoner_identity=identity,
        )
        if parsed.absent:
            result.status = STATUS_NOT_FOUND
        result.confidence_note = note
        result.reasoner_batch = answer.batch_size
        if sampled:
            samples = [parse_answer(o.text, frame.model_width, frame.model_height) for o in sampled]
            result.confidence = score_agreement(parsed, samples, confidence_temperature)
        latencies = {
            "reasoner_prefill": answer.prefill_s,
            "reasoner_decode": answer.decode_s,
            "parse": time.perf_counter() - parse_started,
        }
        if parsed.ok:
            result.box = _clip_box(frame.box_to_original(parsed.box), frame)
            result.points = [_clip_point(frame.point_to_original(p), frame) for p in parsed.points]
            segmented = self.segmenter.segment(image, box=result.box, points=result.points)
            result.mask = segmented.mask.astype(bool)
            result.mask_score = float(segmented.score)
            result.mask_logits = segmented.low_res_logits
            result.embedding_cached = segmented.cache_hit
            result.status = STATUS_OK
            latencies.update(segmenter_encode=segmented.encode_s, segmenter_decode=segmented.decode_s)
            if not result.mask.any():
                result.warnings.append("the segmenter returned an empty mask for this box and these points")
        latencies["total"] = time.perf_counter() - started
        result.latencies = latencies
        return result


def _answers(
    reasoner: Reasoner, image: np.ndarray, prompt: str, samples: int, temperature: float
) -> tuple[ReasonerOutput, list[ReasonerOutput], Optional[str]]:
    """The greedy answer, the sampled ones (empty when none were asked for or the backend can't), and a note."""
    if samples <= 0:
        return reasoner.generate(image, prompt), [], None
    with_samples = getattr(reasoner, "generate_with_samples", None)
    if with_samples is None:
        note = f"confidence needs the transformers backend; {type(reasoner).__name__} answers greedily only"
        return reasoner.generate(image, prompt), [], note
    outputs = with_samples(image, prompt, samples, temperature)
    return outputs[0], outputs[1:], None


def clicks_json(clicks: Optional[tuple[Click, ...]]) -> Optional[dict]:
    """Where the clinician clicked, in pixels of the picture (the slice's column and row)."""
    if not clicks:
        return None
    return {
        "foreground": [[c.x, c.y] for c in clicks if c.foreground],
        "background": [[c.x, c.y] for c in clicks if not c.foreground],
    }


def _note(note: Optional[str]) -> Optional[dict]:
    return {"note": note} if note else None


def _clip_point(point: tuple[float, float], frame: ImageFrame) -> tuple[float, float]:
    """Keep mapped coordinates on the original pixel grid (a model-frame edge maps to the image's far edge)."""
    x, y = point
    return min(max(x, 0.0), frame.orig_width - 1.0), min(max(y, 0.0), frame.orig_height - 1.0)


def _clip_box(box: tuple[float, float, float, float], frame: ImageFrame) -> tuple[float, float, float, float]:
    x1, y1 = _clip_point(box[:2], frame)
    x2, y2 = _clip_point(box[2:], frame)
    return x1, y1, x2, y2


def rounded(values) -> Optional[list[float]]:
    return None if values is None else [round(float(v), 2) for v in values]

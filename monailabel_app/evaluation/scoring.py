"""One sample scored at the paper's standard: the answer parsed, mapped onto the image, segmented three ways, measured.

Parsers (`PARSERS`):
- "paper" (the default): `reference_answer_parser`, the released evaluation's strict parsing with coordinates used as
  written. This is what reproduces the published table, baselines included.
- "app": `answer_parser`, what the MONAI Label app accepts (code fences, `bbox_2d`/`point_2d`, swapped corners
  reordered, coordinates clamped to the model frame): the score of what a clinician would get from the app.
Coordinates go from the answer's frame to the image's pixels before scoring. For U-MRG's pictures (840x840, already
multiples of 28) the frame is the identity, so this is the paper's raw comparison.
Dice: the segmenter is prompted three ways, as in the paper's table: points only, box only, and joint (box and both
points, all positive); each keeps its best-scored mask. One image embedding serves all three (the segmenter's cache).
A failed answer is scored 0 everywhere and never reaches the segmenter.
"Not in this image" (`answer_parser.says_absent`, whichever parser scores the box) makes the line's status
`not_found`. A negative sample (its truth `NEGATIVE_TRUTH`: a saved "no finding") has no box to score: its line has no
metrics and says `negative: true`; the summary counts it in the false-positive rate instead (`summary.abstention`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from monailabel_app.data.sample import GroundingSample
from monailabel_app.evaluation.answers import ModelAnswer
from monailabel_app.evaluation.metrics import PROMPT_SETTINGS, sample_metrics
from monailabel_app.evaluation.reference_parser import parse_reference_answer
from monailabel_app.grounding.pipeline import STATUS_NO_GROUNDING, STATUS_NOT_FOUND, STATUS_OK
from monailabel_app.reasoning.answer_parser import ParsedAnswer, parse_answer, says_absent
from monailabel_app.segmentation.segmenter import Segmenter

PARSERS = ("paper", "app")


@dataclass
class ScoredSample:
    line: dict  # one line of results.jsonl
    masks: dict[str, Optional[np.ndarray]] = field(default_factory=dict)  # per prompt setting, when segmented


def parse_for_evaluation(answer: ModelAnswer, parser: str) -> ParsedAnswer:
    """Both kinds have the same fields (ok, think, box, points, reason, warnings); coordinates in the model frame."""
    if answer.text is None:
        return ParsedAnswer(ok=False, reason=answer.error or "no answer")
    if parser == "paper":
        return parse_reference_answer(answer.text)
    if parser == "app":
        return parse_answer(answer.text, answer.frame.model_width, answer.frame.model_height)
    raise ValueError(f"unknown parser {parser!r}; choose one of {PARSERS}")


def score_sample(
    sample: GroundingSample, answer: ModelAnswer, segmenter: Optional[Segmenter], parser: str = "paper"
) -> ScoredSample:
    parsed = parse_for_evaluation(answer, parser)
    box = points = None
    if parsed.ok:
        box = answer.frame.box_to_original(parsed.box)
        points = [answer.frame.point_to_original(point) for point in parsed.points]
    masks, segment_s = None, 0.0
    if segmenter is not None and sample.mask is not None and not sample.is_negative:
        masks, segment_s = segment_three_ways(segmenter, sample.image, box, points)
    status = STATUS_OK if parsed.ok else STATUS_NOT_FOUND if says_absent(answer.text) else STATUS_NO_GROUNDING
    line = {
        "id": sample.sample_id,
        "question": sample.question,
        "modality": sample.modality,
        "supercategory": sample.supercategory,
        "category": sample.category,
        "status": status,
        "negative": sample.is_negative,
        "raw_output": answer.text,
        "answer_error": answer.error,
        "parser": parser,
        "think": parsed.think,
        "reason": parsed.reason,
        "warnings": list(parsed.warnings),
        "frame": asdict(answer.frame),
        "answer": {"box": parsed.box, "points": parsed.points},
        "prediction": {"box": box, "points": points},
        "ground_truth": sample.ground_truth,
        "metrics": {} if sample.is_negative else sample_metrics(box, points, sample.ground_truth, masks, sample.mask),
        "timing": {
            "prefill_s": answer.prefill_s,
            "decode_s": answer.decode_s,
            "new_tokens": answer.new_tokens,
            "segment_s": segment_s,
        },
    }
    return ScoredSample(line, masks or {})


def segment_three_ways(
    segmenter: Segmenter, image: np.ndarray, box, points
) -> tuple[dict[str, Optional[np.ndarray]], float]:
    """Masks for the points-only, box-only and joint prompts (None each when there is no prediction), and the time."""
    if box is None:
        return {setting: None for setting in PROMPT_SETTINGS}, 0.0
    prompts = {"points": {"points": points}, "box": {"box": box}, "joint": {"box": box, "points": points}}
    started = time.perf_counter()
    masks = {setting: segmenter.segment(image, **prompts[setting]).mask for setting in PROMPT_SETTINGS}
    return masks, time.perf_counter() - started

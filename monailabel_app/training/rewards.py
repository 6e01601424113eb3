"""MedReasoner's GRPO rewards (docs/method.md §4), "soft" (the released model) and "hard".

Reproduces the released reward, PRIS-CV/MedReasoner `verl/utils/reward_score/med_grounding.py`, to its rounding:
the policy was optimised against that function, so retraining must see the same numbers. That includes its strict
parsing (first <think>, first <answer>, every ' turned into ", `json.loads`; nothing lenient) and its quirks:

- "A number" is what `isinstance(v, (int, float))` accepts: JSON true/false count (bool is an int subclass), and so
  do NaN, Infinity and -Infinity, which `json.loads` decodes.
- An answer missing some keys still earns the terms of the parts it has (format 0.4, box terms computed).
- Box terms and point terms are each all-or-nothing: an arithmetic error in any of them (a zero-height box in the
  hard scale term, the log of a negative area of an inverted box, float overflow) zeroes that whole group, the
  soft IoU term included.
- Box and point-align distances are divided by (GT diagonal + 1e-5); a plain reading says just the diagonal.
- The lens area's case boundaries are widened by 1e-5 (disjoint if d >= r1 + r2 - 1e-5, nested if
  d <= |r1 - r2| + 1e-5) on top of the +1e-5 radius; a plain reading says exact. Invisible after rounding.
- The answer is the whole first <answer> block, not the first {...} inside it (that is the evaluation script's
  parser, docs/method.md §2): code fences or trailing text make it "not JSON" (0.2).
- "Inside" (the validity factors) is the closed box: a point on the edge is inside.

Deliberate differences from the reference (they only touch inputs where it crashes or returns NaN):
- A term that comes out NaN (NaN or infinite coordinates can produce one) is 0 here; the reference returns NaN,
  which would poison the whole GRPO group's advantages. The score therefore always lies in [0, 4] soft, [0, 8] hard.
- An unknown mode or a malformed ground truth raises ValueError; the reference silently scores such a call 0.
- The reference names the answer-format term "format_seg"; here it is "format_answer". Its validity flags are not
  returned.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from typing import Any, Mapping, Sequence

from monailabel_app.core.overlap import box_iou, points_dice

MODES = ("soft", "hard")
REWARD_KEYS = (
    "score",
    "format_think",
    "format_answer",
    "bbox_iou",
    "bbox_align",
    "bbox_scale",
    "points_dice",
    "points_align",
    "points_angle",
)
ANSWER_KEYS = ("bbox", "points_1", "points_2")

_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NO_ANSWER_BLOCK = object()
_NOT_JSON = object()

_BOX_IOU_EPS = 1e-5
_RADIUS_EPS = 1e-5
_LENS_TOLERANCE = 1e-5
_DIAG_EPS = 1e-5
_MIN_POINT_SPREAD = 10  # px; closer point pairs are penalised
_NUMERIC_ERRORS = (ArithmeticError, ValueError)  # ZeroDivision/Overflow, and math domain errors


def smooth_log(value: float, k: float = 3.0) -> float:
    """Concave map of an overlap: 0 -> 0.1, 1 -> 1, so early gains pay most (a dice above 1 maps above 1)."""
    return math.log(k * value + 1) / math.log(k + 1) * 0.9 + 0.1


def smooth_exp(value: float, c: float, k: float = 3.0) -> float:
    """Sigmoid map of a distance in [0, 2] onto [0.1, 1], 1 at distance 0, falling fastest around `c`."""
    raw = 1.0 / (1 + math.exp(k * (value - c)))
    at_two = 1.0 / (1 + math.exp(k * (2 - c)))
    at_zero = 1.0 / (1 + math.exp(k * (0 - c)))
    return (raw - at_two) / (at_zero - at_two + 1e-8) * 0.9 + 0.1


def penalize(reward: float, validity_a: float, validity_b: float, keep: float = 0.7) -> float:
    """Scale 30% of a term by the mean of two validity factors (1, 0.5 or 0.25), clip to [0, 1], round to 4 places."""
    reward = keep * reward + (1 - keep) * reward * ((validity_a + validity_b) / 2)
    return round(min(max(reward, 0.0), 1.0), 4)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))  # bool included, NaN/inf included: as the reference


def _is_box(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)


def _is_point(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)


def _decode_answer(response: str) -> Any:
    """The decoded JSON of the first <answer> block, or one of the two failure sentinels."""
    match = _ANSWER_BLOCK.search(response)
    if match is None:
        return _NO_ANSWER_BLOCK
    try:
        return json.loads(match.group(1).strip().replace("'", '"'))
    except (ValueError, RecursionError):  # JSONDecodeError, over-long integers, absurd nesting
        return _NOT_JSON


def format_think(response: str) -> float:
    """1 for a non-blank first <think> block, 0.2 for a blank one, 0 without one."""
    match = _THINK_BLOCK.search(response)
    if match is None:
        return 0.0
    return 1.0 if match.group(1).strip() else 0.2


def format_answer(answer: Any) -> float:
    """Grade the decoded answer: 0 absent, 0.2 not a JSON object, 0.4 keys missing or box and points both
    malformed, 0.6 exactly one of them malformed, 1 well formed."""
    if answer is _NO_ANSWER_BLOCK:
        return 0.0
    if not isinstance(answer, dict):  # includes _NOT_JSON
        return 0.2
    if not all(key in answer for key in ANSWER_KEYS):
        return 0.4
    box_ok = _is_box(answer["bbox"])
    points_ok = _is_point(answer["points_1"]) and _is_point(answer["points_2"])
    if box_ok and points_ok:
        return 1.0
    return 0.6 if box_ok or points_ok else 0.4


def _inside(point: Sequence[float], box: Sequence[float]) -> float:
    """Validity factor: 1 if the point lies in the closed box, else 0.5 (NaN compares false: outside)."""
    return 1.0 if box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3] else 0.5


def _area_validity(pred: Sequence[float], gt: Sequence[float]) -> float:
    """Validity factor: 1 if the predicted box area is within (0.5, 2) x the GT area, else 0.5.

    Float zeros on purpose, unlike `geometry.box_area`: an integer too large for a float then overflows here,
    zeroing the box terms as in the reference.
    """
    pred_area = max(0.0, pred[2] - pred[0]) * max(0.0, pred[3] - pred[1])
    gt_area = max(0.0, gt[2] - gt[0]) * max(0.0, gt[3] - gt[1])
    return 1.0 if 0.5 * gt_area < pred_area < 2 * gt_area else 0.5


def _normalised_distance(distance: float, gt_box: Sequence[float]) -> float:
    """A distance in units of the GT box diagonal, clipped to [0, 2]."""
    diagonal = math.sqrt((gt_box[2] - gt_box[0]) ** 2 + (gt_box[3] - gt_box[1]) ** 2)
    return max(min(distance / (diagonal + _DIAG_EPS), 2.0), 0.0)


def _box_shape_distance(pred: Sequence[float], gt: Sequence[float]) -> float:
    """Distance in log-area and log-aspect between two boxes, capped at 1; raises on degenerate boxes."""
    wp, hp = pred[2] - pred[0], pred[3] - pred[1]
    wg, hg = gt[2] - gt[0], gt[3] - gt[1]
    log_area = math.log((wp * hp + 1e-6) / (wg * hg + 1e-6))
    log_aspect = math.log((wp / hp + 1e-6) / (wg / hg + 1e-6))
    return min(math.sqrt(log_area**2 + log_aspect**2), 1.0)


def _box_terms(answer: Any, gt_box: list, gt_points: list, mode: str) -> dict[str, float]:
    terms = {"bbox_iou": 0.0, "bbox_align": 0.0, "bbox_scale": 0.0}
    pred = answer.get("bbox") if isinstance(answer, dict) else None
    if not _is_box(pred):
        return terms
    try:
        position = _inside(gt_points[0], pred) * _inside(gt_points[1], pred)
        area = _area_validity(pred, gt_box)
        computed = {"bbox_iou": penalize(smooth_log(box_iou(pred, gt_box, _BOX_IOU_EPS)), position, area)}
        if mode == "hard":
            mean_edge_offset = sum(abs(p - g) for p, g in zip(pred, gt_box)) / 4
            align = smooth_exp(_normalised_distance(mean_edge_offset, gt_box), c=1.0)
            computed["bbox_align"] = penalize(align, position, area)
            computed["bbox_scale"] = penalize(smooth_exp(_box_shape_distance(pred, gt_box), c=0.5), position, area)
    except _NUMERIC_ERRORS:
        return terms
    return terms | computed


def _mean_abs_offset(p: Sequence[float], q: Sequence[float]) -> float:
    return (abs(p[0] - q[0]) + abs(p[1] - q[1])) / 2


def _abs_cosine(gt_points: list, pred_points: list) -> float:
    """|cos| of the angle between the GT and predicted point-pair directions: pairs are unordered."""
    gx, gy = gt_points[1][0] - gt_points[0][0], gt_points[1][1] - gt_points[0][1]
    px, py = pred_points[1][0] - pred_points[0][0], pred_points[1][1] - pred_points[0][1]
    return abs((gx * px + gy * py) / ((math.hypot(gx, gy) + 1e-8) * (math.hypot(px, py) + 1e-8)))


def _point_terms(answer: Any, gt_box: list, gt_points: list, mode: str) -> dict[str, float]:
    terms = {"points_dice": 0.0, "points_align": 0.0, "points_angle": 0.0}
    if not isinstance(answer, dict):
        return terms
    p1, p2 = answer.get("points_1"), answer.get("points_2")
    if not (_is_point(p1) and _is_point(p2)):
        return terms
    try:
        position = _inside(p1, gt_box) * _inside(p2, gt_box)
        spread = 1.0 if math.dist(p1, p2) > _MIN_POINT_SPREAD else 0.5
        dice = points_dice([p1, p2], gt_points, radius_eps=_RADIUS_EPS, tolerance=_LENS_TOLERANCE)
        computed = {"points_dice": penalize(smooth_log(dice), position, spread)}
        if mode == "hard":
            g1, g2 = gt_points
            same_order = _mean_abs_offset(p1, g1) + _mean_abs_offset(p2, g2)
            swapped = _mean_abs_offset(p1, g2) + _mean_abs_offset(p2, g1)
            align = smooth_exp(_normalised_distance(min(same_order, swapped) / 2, gt_box), c=1.0)
            computed["points_align"] = penalize(align, position, spread)
            computed["points_angle"] = penalize(smooth_log(_abs_cosine(gt_points, [p1, p2])), position, spread)
    except _NUMERIC_ERRORS:
        return terms
    return terms | computed


def _plain_number(value: Any) -> int | float:
    """A GT coordinate as a Python int or float, so numpy scalars cannot change the arithmetic (numpy divides by
    zero into inf where the reference raises)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"ground-truth coordinate {value!r} is not a finite number")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _parse_ground_truth(ground_truth: Mapping | str) -> tuple[list, list]:
    """GT box and point pair; a malformed GT is a data bug, so it raises instead of scoring 0."""
    gt = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    try:
        box = [_plain_number(v) for v in gt["bbox_2d"]]
        points = [[_plain_number(v) for v in point] for point in gt["point_2d"]]
    except (KeyError, TypeError) as error:
        raise ValueError(f"ground truth needs 'bbox_2d' and 'point_2d': {ground_truth!r}") from error
    if len(box) != 4 or len(points) != 2 or any(len(point) != 2 for point in points):
        raise ValueError(f"ground truth needs 4 box numbers and two [x, y] points: {ground_truth!r}")
    return box, points


def compute_reward(response: str, ground_truth: Mapping | str, mode: str = "soft") -> dict[str, float]:
    """Reward of one rollout: format terms plus box and point terms; never raises on the response text.

    `ground_truth` is {"bbox_2d": [x1, y1, x2, y2], "point_2d": [[x, y], [x, y]]} or its JSON string. Returns a
    float for every key in REWARD_KEYS; terms the mode does not use are 0.0.
    """
    if mode not in MODES:
        raise ValueError(f"reward mode must be one of {MODES}, got {mode!r}")
    gt_box, gt_points = _parse_ground_truth(ground_truth)
    answer = _decode_answer(response)
    terms = {"format_think": format_think(response), "format_answer": format_answer(answer)}
    terms |= _box_terms(answer, gt_box, gt_points, mode)
    terms |= _point_terms(answer, gt_box, gt_points, mode)
    terms = {key: 0.0 if math.isnan(value) else float(value) for key, value in terms.items()}
    return {"score": sum(terms.values()), **terms}


def compute_rewards(
    responses: Sequence[str], ground_truths: Sequence[Mapping | str], mode: str = "soft"
) -> list[dict[str, float]]:
    """Rewards of a group of rollouts, each against its own ground truth (repeat the GT for one prompt's group)."""
    if len(responses) != len(ground_truths):
        raise ValueError(f"{len(responses)} responses but {len(ground_truths)} ground truths")
    return [compute_reward(r, g, mode) for r, g in zip(responses, ground_truths)]

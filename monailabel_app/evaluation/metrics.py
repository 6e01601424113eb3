"""The paper's evaluation metrics (docs/method.md §7), as in PRIS-CV/MedReasoner `eval/utils.py` and
`eval/statistic.py`: box IoU, point-pair pDice, mask Dice per prompt setting, and their means x100.

A failure (no parsable box, points or mask) scores 0 and stays in every mean, as in the paper. Differences from the
released evaluation, none of which changes a well-formed sample's value:
- the lens-area acos arguments are clamped; the reference raises a math domain error on rare near-tangent pairs and
  then scores the sample's IoU and pDice both 0;
- masks are binarised with > 0 (the reference divides the GT PNG by 255 and sums it, the same for 0/255 masks);
- per-sample values are not rounded to 4 places before averaging, and means are not rounded;
- non-finite coordinates score 0 instead of propagating NaN into the means.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from monailabel_app.core.overlap import box_iou, points_dice

BOX_IOU_EPS = 1e-6
MASK_DICE_EPS = 1e-6
PROMPT_SETTINGS = ("points", "box", "joint")  # what the segmenter was prompted with; keys of `masks`
GROUP_KEYS = ("supercategory", "category", "modality")


def _finite_array(values: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """`values` as a float array of `shape` with finite entries, or None (a failed prediction)."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return None
    if array.shape != shape or not np.isfinite(array).all():
        return None
    return array


def box_iou_metric(pred_box: Any, gt_box: Sequence[float]) -> float:
    """Box IoU with union + 1e-6; 0 when the prediction is not four finite numbers."""
    pred = _finite_array(pred_box, (4,))
    return 0.0 if pred is None else box_iou(pred.tolist(), list(gt_box), BOX_IOU_EPS)


def points_dice_metric(pred_points: Any, gt_points: Sequence[Sequence[float]]) -> float:
    """pDice as evaluated (no radius epsilon, unclipped, so in [0, 2]); 0 when the prediction is not two points."""
    pred = _finite_array(pred_points, (2, 2))
    return 0.0 if pred is None else points_dice(pred.tolist(), [list(p) for p in gt_points])


def mask_dice(pred_mask: np.ndarray | None, gt_mask: np.ndarray) -> float:
    """2|P∩G| / (|P| + |G| + 1e-6) of binary masks; 0 for a missing prediction (and for two empty masks)."""
    if pred_mask is None:
        return 0.0
    pred, gt = np.asarray(pred_mask) > 0, np.asarray(gt_mask) > 0
    if pred.shape != gt.shape:
        raise ValueError(f"predicted mask {pred.shape} and GT mask {gt.shape} differ in shape")
    return float(2.0 * np.logical_and(pred, gt).sum() / (pred.sum() + gt.sum() + MASK_DICE_EPS))


def sample_metrics(
    box: Any,
    points: Any,
    ground_truth: Mapping[str, Any],
    masks: Mapping[str, np.ndarray | None] | None = None,
    gt_mask: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of one parsed prediction against {"bbox_2d": ..., "point_2d": ...}; None parts score 0.

    `masks` maps a prompt setting (see PROMPT_SETTINGS) to the segmenter's mask, or None where it failed; each gives
    a "dice_<setting>" entry. Without `masks` only "iou" and "pdice" are returned.
    """
    result = {
        "iou": box_iou_metric(box, ground_truth["bbox_2d"]),
        "pdice": points_dice_metric(points, ground_truth["point_2d"]),
    }
    if masks is not None:
        if gt_mask is None:
            raise ValueError("mask Dice needs the GT mask")
        result |= {f"dice_{setting}": mask_dice(mask, gt_mask) for setting, mask in masks.items()}
    return result


def positives(lines: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The result lines with a target to score: a negative's ("no finding") line has no metrics."""
    return [line for line in lines if not line.get("negative")]


def metric_value(record: Mapping[str, Any], name: str) -> float:
    """A record's metric, with a missing, None or NaN value counted as a failure (0)."""
    value = record.get(name)
    return 0.0 if value is None or math.isnan(value) else float(value)


def _means_x100(records: Sequence[Mapping[str, Any]], metric_names: Sequence[str]) -> dict[str, float]:
    means = {name: 100.0 * float(np.mean([metric_value(r, name) for r in records])) for name in metric_names}
    return {**means, "count": len(records)}


def aggregate(
    records: Iterable[Mapping[str, Any]],
    metric_names: Sequence[str] | None = None,
    group_keys: Sequence[str] = GROUP_KEYS,
) -> dict[str, Any]:
    """Means x100 overall and per value of each group key, as the paper reports them.

    A record holds metric values (from `sample_metrics`) and group labels; a missing label groups as "unknown".
    `metric_names` defaults to every "iou", "pdice" and "dice_*" key any record has. Returns
    {"overall": {name: mean, "count": n}, <group key>: {<label>: {name: mean, "count": n}}}.
    """
    records = list(records)
    if metric_names is None:
        found = {key for r in records for key in r if key in ("iou", "pdice") or key.startswith("dice_")}
        metric_names = sorted(found, key=lambda name: (name not in ("iou", "pdice"), name))
    result: dict[str, Any] = {"overall": _means_x100(records, metric_names) if records else {"count": 0}}
    for key in group_keys:
        groups: dict[str, list] = defaultdict(list)
        for record in records:
            label = record.get(key)
            groups["unknown" if label is None else str(label)].append(record)
        result[key] = {label: _means_x100(members, metric_names) for label, members in sorted(groups.items())}
    return result

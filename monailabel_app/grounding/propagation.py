"""One answer on a key slice, carried through the volume by the frozen segmenter, slice by slice, in both directions.

Each next slice is prompted from its neighbour's result: the box around the neighbour's mask (a few pixels wider) and
the neighbour's mask logits as the mask prompt. Nothing is trained and the reasoner is not asked again.

Where it stops (`StopRule`; the first rule a slice breaks ends that direction, and that slice is not kept):
- `empty`: the segmenter finds nothing;
- `shrank`: the mask is under `min_area_ratio` of its neighbour's (the target is ending);
- `grew`: the mask is over `max_area_ratio` of its neighbour's (it leaks into something else);
- `moved`: it overlaps its neighbour's mask by less than `min_overlap` (IoU): it jumped to another structure;
- `unsure`: the segmenter's own score is under `min_score`;
- `looks different`: the mean grey level under the mask differs from the key slice's by more than
  `max_grey_shift` (of 255, on the same window): a box on a slice past the target's end outlines whatever is there.
The rule is a guard, not a guarantee: the result says which rule stopped each direction, and the clinician sees it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from monailabel_app.segmentation.segmenter import Segmenter

BOX_MARGIN_PX = 2


@dataclass(frozen=True)
class StopRule:
    min_area_ratio: float = 0.3
    max_area_ratio: float = 1.6
    min_overlap: float = 0.3
    min_score: float = 0.3
    max_grey_shift: float = 40.0


@dataclass
class Propagation:
    masks: dict[int, np.ndarray]  # slice index -> bool (H, W), the key slice included
    first: int
    last: int
    stopped: dict[str, str] = field(default_factory=dict)  # "up" / "down" -> the rule that stopped it, or "edge"
    seconds_per_slice: float = 0.0

    def to_json(self, key: int) -> dict:
        return {
            "key_slice": key,
            "slice_range": [self.first, self.last],
            "slices_filled": len(self.masks),
            "stopped": dict(self.stopped),
            "seconds_per_slice": round(self.seconds_per_slice, 4),
        }


def propagate(
    segmenter: Segmenter,
    render: Callable[[int], np.ndarray],
    num_slices: int,
    key: int,
    key_mask: np.ndarray,
    key_logits: Optional[np.ndarray] = None,
    rule: StopRule = StopRule(),
) -> Propagation:
    """`render(k)` is slice k as the model saw the key slice (RGB uint8, same window)."""
    masks = {key: key_mask.astype(bool)}
    key_grey = _mean_grey(render(key), key_mask)
    stopped: dict[str, str] = {}
    steps, started = 0, time.perf_counter()
    for name, step in (("up", 1), ("down", -1)):
        previous, logits = key_mask.astype(bool), key_logits
        k = key + step
        stopped[name] = "edge"
        while 0 <= k < num_slices:
            picture = render(k)
            output = segmenter.segment(picture, box=_box_around(previous), mask_logits=logits)
            steps += 1
            reason = _broken_rule(output.mask, output.score, previous, _mean_grey(picture, output.mask), key_grey, rule)
            if reason:
                stopped[name] = reason
                break
            masks[k] = output.mask.astype(bool)
            previous, logits = masks[k], output.low_res_logits
            k += step
    took = time.perf_counter() - started
    return Propagation(masks, min(masks), max(masks), stopped, took / steps if steps else 0.0)


def _broken_rule(
    mask: np.ndarray, score: float, previous: np.ndarray, grey: float, key_grey: float, rule: StopRule
) -> Optional[str]:
    area, before = int(mask.sum()), int(previous.sum())
    if area == 0:
        return "empty"
    if area < rule.min_area_ratio * before:
        return "shrank"
    if area > rule.max_area_ratio * before:
        return "grew"
    if mask_iou(mask, previous) < rule.min_overlap:
        return "moved"
    if score < rule.min_score:
        return "unsure"
    if abs(grey - key_grey) > rule.max_grey_shift:
        return "looks different"
    return None


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.logical_or(a, b).sum())
    return int(np.logical_and(a, b).sum()) / union if union else 0.0


def _box_around(mask: np.ndarray) -> list[float]:
    rows, columns = np.nonzero(mask)
    height, width = mask.shape
    return [
        float(max(columns.min() - BOX_MARGIN_PX, 0)),
        float(max(rows.min() - BOX_MARGIN_PX, 0)),
        float(min(columns.max() + BOX_MARGIN_PX, width - 1)),
        float(min(rows.max() + BOX_MARGIN_PX, height - 1)),
    ]


def _mean_grey(picture: np.ndarray, mask: np.ndarray) -> float:
    return float(picture[mask].mean()) if mask.any() else 0.0

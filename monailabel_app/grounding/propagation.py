"""One answer on a key slice, carried through the volume by the frozen segmenter, slice by slice, in both directions.

How the next slice's mask is made (`method` in the result):
- `video predictor` (SAM2, MedSAM2): the segmenter tracks the key slice's mask itself, the slices being the frames of
  its video predictor, which remembers the slices before (`segmentation.sam2_tracking`);
- `neighbour prompt` (SAM, MedSAM, LiteMedSAM): each next slice is prompted from its neighbour's result: the box
  around the neighbour's mask (a few pixels wider) and the neighbour's mask logits as the mask prompt.
Nothing is trained and the reasoner is not asked again.

Where it stops (`StopRule`; the first rule a slice breaks ends that direction, and that slice is not kept):
- `empty`: the segmenter finds nothing;
- `shrank`: the mask is under `min_area_ratio` of its neighbour's (the target is ending);
- `grew`: the mask is over `max_area_ratio` of its neighbour's (it leaks into something else);
- `moved`: it overlaps its neighbour's mask by less than `min_overlap` (IoU): it jumped to another structure;
- `unsure`: the segmenter's own score is under `min_score`;
- `looks different`: the mean grey level under the mask differs from the key slice's by more than
  `max_grey_shift` (of 255, on the same window): a box on a slice past the target's end outlines whatever is there;
- `window` (video predictor only): `max_slices` slices away from the key slice; a longer series is cut there to keep
  the tracker's memory bounded.
The score is the segmenter's predicted IoU for the neighbour prompt, and the tracker's object score (its belief that
the target is on the slice) for the video predictor. The tracker empties its own mask when that belief is under 0.5,
so on the video predictor `empty` fires before `unsure` (min_score 0.3) could: there `empty` is the low-score stop.
The rule is a guard, not a guarantee: the result says which rule stopped each direction, and the clinician sees it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Generator, Optional

import numpy as np

from monailabel_app.segmentation.segmenter import Segmenter, VolumeTracker

BOX_MARGIN_PX = 2
MAX_TRACKED_SLICES = 256  # each way, for the video predictor


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
    method: str = "neighbour prompt"

    def to_json(self, key: int) -> dict:
        return {
            "key_slice": key,
            "slice_range": [self.first, self.last],
            "slices_filled": len(self.masks),
            "stopped": dict(self.stopped),
            "seconds_per_slice": round(self.seconds_per_slice, 4),
            "method": self.method,
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
    tracking = isinstance(segmenter, VolumeTracker)
    stopped: dict[str, str] = {}
    steps, started = 0, time.perf_counter()
    for name, step in (("up", 1), ("down", -1)):
        if tracking:
            candidates = segmenter.track(render, num_slices, key, masks[key], step, MAX_TRACKED_SLICES)
        else:
            candidates = _neighbour_prompted(segmenter, render, num_slices, key, masks[key], key_logits, step)
        previous, stopped[name] = masks[key], "edge"
        with contextlib.closing(candidates):  # a tracker's session (and its lock) ends here, even on an error
            for k, picture, mask, score in candidates:
                steps += 1
                reason = _broken_rule(mask, score, previous, _mean_grey(picture, mask), key_grey, rule)
                if reason:
                    stopped[name] = reason
                    break
                masks[k] = previous = mask.astype(bool)
        if tracking and stopped[name] == "edge" and 0 <= key + step * (MAX_TRACKED_SLICES + 1) < num_slices:
            stopped[name] = "window"
    took = time.perf_counter() - started
    method = "video predictor" if tracking else "neighbour prompt"
    return Propagation(masks, min(masks), max(masks), stopped, took / steps if steps else 0.0, method)


def _neighbour_prompted(
    segmenter: Segmenter,
    render: Callable[[int], np.ndarray],
    num_slices: int,
    key: int,
    key_mask: np.ndarray,
    key_logits: Optional[np.ndarray],
    step: int,
) -> Generator[tuple[int, np.ndarray, np.ndarray, float], None, None]:
    """(slice, picture, mask, score) outwards from the key slice, each prompted from the one before (the caller stops
    reading at the first slice its rule refuses, so the one before is always the last one kept)."""
    previous, logits = key_mask, key_logits
    k = key + step
    while 0 <= k < num_slices:
        picture = render(k)
        output = segmenter.segment(picture, box=_box_around(previous), mask_logits=logits)
        yield k, picture, output.mask, output.score
        previous, logits = output.mask, output.low_res_logits
        k += step


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

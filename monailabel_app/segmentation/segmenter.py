"""The segmenter contract: frozen promptable segmentation from a box and points (original pixel frame), optionally
with point labels (1 foreground, 0 background) and the low-resolution mask logits of an earlier prediction (a
neighbouring slice's, when an answer is propagated through a volume)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generator, Optional, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass
class SegmentOutput:
    mask: np.ndarray  # bool (H, W) in the original image frame
    score: float  # the segmenter's own quality estimate for the kept mask
    encode_s: float = 0.0  # 0.0 when the image embedding came from the cache
    decode_s: float = 0.0
    cache_hit: bool = False
    low_res_logits: Optional[np.ndarray] = None  # (1, h, w) float32: the kept mask's logits, for a next prompt


class Segmenter(Protocol):
    """Box (x1, y1, x2, y2) and/or points [(x, y), ...], all in pixels of `image` (RGB uint8, H x W x 3); points are
    positive unless `labels` says otherwise; `mask_logits` is an earlier `low_res_logits`."""

    name: str
    encoder_calls: int  # how many times the image encoder really ran (cache misses)

    def segment(
        self,
        image: np.ndarray,
        box: Optional[Sequence[float]] = None,
        points: Optional[Sequence[Sequence[float]]] = None,
        labels: Optional[Sequence[int]] = None,
        mask_logits: Optional[np.ndarray] = None,
    ) -> SegmentOutput: ...


@runtime_checkable
class VolumeTracker(Protocol):
    """A segmenter that carries a key slice's mask through a volume itself (SAM2's video predictor), remembering
    the slices it has seen; `track` yields (slice, picture, mask, score) outwards from `key` in direction `step` (+1
    or -1), the picture being the slice as rendered for the tracker. A generator: the caller closes it when it stops
    reading, which ends the tracking session."""

    def track(
        self,
        render: Callable[[int], np.ndarray],
        num_slices: int,
        key: int,
        key_mask: np.ndarray,
        step: int,
        max_slices: int,
    ) -> Generator[tuple[int, np.ndarray, np.ndarray, float], None, None]: ...

"""The segmenter contract: frozen promptable segmentation from a box and positive points (original pixel frame)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np


@dataclass
class SegmentOutput:
    mask: np.ndarray  # bool (H, W) in the original image frame
    score: float  # the segmenter's own quality estimate for the kept mask
    encode_s: float = 0.0  # 0.0 when the image embedding came from the cache
    decode_s: float = 0.0
    cache_hit: bool = False


class Segmenter(Protocol):
    """Box (x1, y1, x2, y2) and/or positive points [(x, y), ...], all in pixels of `image` (RGB uint8, H x W x 3)."""

    name: str
    encoder_calls: int  # how many times the image encoder really ran (cache misses)

    def segment(
        self,
        image: np.ndarray,
        box: Optional[Sequence[float]] = None,
        points: Optional[Sequence[Sequence[float]]] = None,
    ) -> SegmentOutput: ...

"""One training or evaluation sample: a picture, the implicit question, the ground truth rewards and metrics need."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

NEGATIVE_TRUTH = {"absent": True}  # the ground truth of a negative: the question's target is not in this picture


@dataclass
class GroundingSample:
    """`image` is RGB uint8 (H, W, 3); `ground_truth` is {"bbox_2d": [x1, y1, x2, y2], "point_2d": [[x, y], [x, y]]}
    in pixels of `image` (map it into the reasoner's frame with `ImageFrame` before scoring a model's answer), or
    `NEGATIVE_TRUTH` for a negative (a clinician's deliberate "no finding": the right answer is "not in this image")."""

    sample_id: str
    image: np.ndarray
    question: str
    ground_truth: dict
    mask: Optional[np.ndarray] = None  # bool (H, W) when known: Dice needs it, rewards don't
    modality: str = "unknown"
    supercategory: str = "unknown"
    category: str = "unknown"
    extra: dict = field(default_factory=dict)

    @property
    def is_negative(self) -> bool:
        return self.ground_truth.get("absent") is True

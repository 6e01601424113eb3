"""The pixel frame the reasoner saw, and the mapping back to the original image.

Qwen2.5-VL resizes every image to multiples of 28 px ("smart resize"), and answers in that resized frame. Every
coordinate that leaves the reasoner goes through `ImageFrame.to_original` before anyone else sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class ImageFrame:
    """Original image size and the size of the image the model actually saw (both in pixels)."""

    orig_width: int
    orig_height: int
    model_width: int
    model_height: int

    @classmethod
    def identity(cls, width: int, height: int) -> "ImageFrame":
        return cls(width, height, width, height)

    @property
    def scale_x(self) -> float:
        return self.orig_width / self.model_width

    @property
    def scale_y(self) -> float:
        return self.orig_height / self.model_height

    def point_to_original(self, point: Sequence[float]) -> tuple[float, float]:
        x, y = point
        return x * self.scale_x, y * self.scale_y

    def point_to_model(self, point: Sequence[float]) -> tuple[float, float]:
        x, y = point
        return x / self.scale_x, y / self.scale_y

    def box_to_original(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        x1, y1 = self.point_to_original(box[:2])
        x2, y2 = self.point_to_original(box[2:])
        return x1, y1, x2, y2

    def box_to_model(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        x1, y1 = self.point_to_model(box[:2])
        x2, y2 = self.point_to_model(box[2:])
        return x1, y1, x2, y2

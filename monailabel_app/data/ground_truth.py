"""Reward ground truth from a binary mask: the tight box and two key points (docs/method.md §6).

Conventions (U-MRG's generation code is not public, so these are our choices):
- Coordinates are pixel indices (x = column, y = row) and the box is inclusive: [x_min, y_min, x_max, y_max] are
  the first and last foreground column/row, the mask-to-box rule of the MedSAM / SAM-Med2D family that U-MRG's masks
  most likely went through. A one-pixel-wide mask therefore has a zero-width box.
- Key point 1 is the centre of the largest inscribed circle (the deepest pixel of the Euclidean distance transform).
  Key point 2 is the centre of the largest inscribed circle that does not overlap the first one, i.e. the largest
  circle inside "mask minus disc 1": its radius at pixel p is min(depth(p), |p - c1| - r1), which is what a second
  distance transform of the mask with disc 1 cut out would give, computed without one.
- The image border bounds the circles like background does (the mask is zero-padded before the transform).
- Ties (plateaus of equal depth in rectangles and lines) are broken by rule, so results are deterministic: circle 1
  takes the tied pixel nearest the centroid of the tied pixels (the middle of a rectangle); circle 2 takes the tied
  pixel farthest from key point 1 (spreading the two prompts across the target); remaining ties go to the first
  pixel in row-major order.
- Compact masks (a disc, a small blob) have no room for a second circle (radius >= 1 px) outside the first. Then
  key point 2 is the centre of the largest inscribed circle that does not contain key point 1: radius
  min(depth(p), |p - c1|), about halfway between the centre and the rim of a disc. A single-pixel mask gets the
  same point twice.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from monailabel_app.core.frames import ImageFrame

_TIE_ATOL = 1e-9


class EmptyMaskError(ValueError):
    """The mask has no foreground pixel, so there is no target to box or point at."""


def _foreground(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D (H, W) mask, got shape {mask.shape}")
    foreground = mask > 0  # 0/255 PNGs and 0/1 label maps alike
    if not foreground.any():
        raise EmptyMaskError("the mask is empty: no box or key points exist")
    return foreground


def mask_box(mask: np.ndarray) -> list[int]:
    """Tight inclusive box [x_min, y_min, x_max, y_max] of the foreground, in pixel indices."""
    ys, xs = np.nonzero(_foreground(mask))
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def _pick(scores: np.ndarray, tie_key: np.ndarray) -> int:
    """Index of the best score; among (near-)equal best scores, the one with the smallest tie_key."""
    tied = np.flatnonzero(np.isclose(scores, scores.max(), rtol=0, atol=_TIE_ATOL))
    return int(tied[np.argmin(tie_key[tied])])


def key_points(mask: np.ndarray) -> list[list[int]]:
    """Centres [[x1, y1], [x2, y2]] of the two largest non-overlapping inscribed circles (see the module notes)."""
    foreground = _foreground(mask)
    ys, xs = np.nonzero(foreground)
    top, left = ys.min(), xs.min()
    crop = np.pad(foreground[top : ys.max() + 1, left : xs.max() + 1], 1)  # background ring, also at image edges
    ys, xs = ys - top, xs - left
    depth = distance_transform_edt(crop)[1:-1, 1:-1][ys, xs]  # radius of the largest disc centred at each pixel

    tied = np.isclose(depth, depth.max(), rtol=0, atol=_TIE_ATOL)
    distance_to_tie_centroid = np.hypot(xs - xs[tied].mean(), ys - ys[tied].mean())
    first = _pick(depth, distance_to_tie_centroid)
    distance_to_first = np.hypot(xs - xs[first], ys - ys[first])

    radius_outside_disc = np.minimum(depth, distance_to_first - depth[first])
    radius_excluding_centre = np.minimum(depth, distance_to_first)
    if radius_outside_disc.max() >= 1:  # room for a disjoint circle at least one pixel in radius
        second = _pick(radius_outside_disc, -distance_to_first)
    elif radius_excluding_centre.max() > 0:
        second = _pick(radius_excluding_centre, -distance_to_first)
    else:  # a single pixel
        second = first
    return [[int(xs[i] + left), int(ys[i] + top)] for i in (first, second)]


def ground_truth_from_mask(mask: np.ndarray, frame: ImageFrame | None = None) -> dict:
    """Reward ground truth {"bbox_2d": [x1, y1, x2, y2], "point_2d": [[x, y], [x, y]]} of a binary (H, W) mask.

    Without `frame` the values are integer pixel indices of the mask. With `frame`, the mask is in the frame's
    original image (shape (orig_height, orig_width)) and the values are floats in the frame the reasoner sees,
    scaled from pixel indices (the half-pixel offset of resampling is ignored, as the reasoner's answers are
    integers anyway).
    """
    box, points = mask_box(mask), key_points(mask)
    if frame is None:
        return {"bbox_2d": box, "point_2d": points}
    if np.shape(mask) != (frame.orig_height, frame.orig_width):
        raise ValueError(
            f"mask shape {np.shape(mask)} is not the frame's original (H, W) {(frame.orig_height, frame.orig_width)}"
        )
    return {
        "bbox_2d": [float(v) for v in frame.box_to_model(box)],
        "point_2d": [[float(v) for v in frame.point_to_model(p)] for p in points],
    }

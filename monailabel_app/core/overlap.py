"""Box and point-pair overlap shared by the GRPO rewards and the evaluation metrics.

Rewards and metrics score the same geometry but with different small epsilons (the released reward and the released
evaluation disagree on them), so every epsilon is an argument here rather than a constant.

Plain Python scalar arithmetic on purpose: the reward must reproduce the released reference operation for operation,
including how Python's `max`/`min` pass NaN through (a NaN in the first argument wins, in the second it loses) and
where float `**` raises OverflowError instead of returning inf. Callers catch ArithmeticError/ValueError.
"""

from __future__ import annotations

import math
from typing import Sequence

Box = Sequence[float]  # [x1, y1, x2, y2]
Point = Sequence[float]  # [x, y]

# Both the reward and the metric divide the doubled lens area by (union + 1e-5).
POINTS_DICE_UNION_EPS = 1e-5


def box_area(box: Box) -> float:
    """Area with negative extents clamped to 0, so an inverted box has no area."""
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def box_iou(pred: Box, gt: Box, eps: float) -> float:
    """Intersection over (union + eps) on continuous coordinates; `eps` is 1e-5 for rewards, 1e-6 for metrics."""
    inter_w = max(0, min(pred[2], gt[2]) - max(pred[0], gt[0]))
    inter_h = max(0, min(pred[3], gt[3]) - max(pred[1], gt[1]))
    inter = inter_w * inter_h
    return inter / (box_area(pred) + box_area(gt) - inter + eps)


def circle_intersection_area(r1: float, r2: float, d: float, tolerance: float = 0.0) -> float:
    """Exact area shared by two circles of radii r1, r2 whose centres are d apart.

    Disjoint or externally tangent circles share nothing; a circle inside the other (internally tangent, concentric
    or equal circles included) shares its whole disc; otherwise the lens is two circular segments. `tolerance`
    widens both case boundaries (the released reward uses 1e-5, the released metric 0). The acos arguments are
    clamped so rounding next to a boundary cannot raise a math domain error.
    """
    if d >= r1 + r2 - tolerance:
        return 0.0
    if d <= abs(r1 - r2) + tolerance:
        return math.pi * min(r1, r2) ** 2
    cos1 = max(-1.0, min(1.0, (d * d + r1 * r1 - r2 * r2) / (2 * d * r1)))
    cos2 = max(-1.0, min(1.0, (d * d + r2 * r2 - r1 * r1) / (2 * d * r2)))
    kite = 0.5 * math.sqrt(max(0.0, (-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2)))
    return r1 * r1 * math.acos(cos1) + r2 * r2 * math.acos(cos2) - kite


def diameter_circle(p: Point, q: Point, radius_eps: float = 0.0) -> tuple[float, float, float]:
    """(cx, cy, r) of the circle whose diameter is the segment p-q."""
    return (p[0] + q[0]) / 2, (p[1] + q[1]) / 2, math.dist(p, q) / 2 + radius_eps


def points_dice(pred: Sequence[Point], gt: Sequence[Point], radius_eps: float = 0.0, tolerance: float = 0.0) -> float:
    """2*I / (U + 1e-5) of the two circles spanned by each point pair: twice the circle IoU, so in [0, 2].

    The reward adds `radius_eps`=1e-5 to both radii and widens the lens cases by `tolerance`=1e-5; the metric uses
    neither.
    """
    pcx, pcy, pr = diameter_circle(pred[0], pred[1], radius_eps)
    gcx, gcy, gr = diameter_circle(gt[0], gt[1], radius_eps)
    d = math.dist((pcx, pcy), (gcx, gcy))
    inter = circle_intersection_area(pr, gr, d, tolerance)
    union = math.pi * pr**2 + math.pi * gr**2 - inter
    return 2 * inter / (union + POINTS_DICE_UNION_EPS)

"""Box IoU, circle lens area and points dice, against values worked out by hand."""

import math

import pytest

from monailabel_app.core.overlap import box_iou, circle_intersection_area, diameter_circle, points_dice


@pytest.mark.parametrize(
    "a, b, expected",
    [
        # nested: 10x10 inside 20x20 -> 100 / 400
        ([0, 0, 10, 10], [0, 0, 20, 20], 0.25),
        # disjoint
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        # touching along the edge x = 10: zero-width intersection
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),
        # overlap 5x5 = 25, union 100 + 100 - 25 = 175
        ([0, 0, 10, 10], [5, 5, 15, 15], 25 / 175),
        # inverted prediction has no area and no intersection
        ([10, 10, 0, 0], [0, 0, 10, 10], 0.0),
    ],
)
def test_box_iou(a, b, expected):
    assert box_iou(a, b, eps=0.0) == pytest.approx(expected, abs=1e-12)


def test_box_iou_epsilon_enters_the_union():
    # identical 1x1 boxes: 1 / (1 + 1) with eps = 1
    assert box_iou([0, 0, 1, 1], [0, 0, 1, 1], eps=1.0) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "r1, r2, d, expected",
    [
        (1.0, 1.0, 3.0, 0.0),  # disjoint
        (1.0, 1.0, 2.0, 0.0),  # externally tangent
        (1.0, 3.0, 1.0, math.pi),  # nested: the small disc, pi * 1^2
        (1.0, 3.0, 2.0, math.pi),  # internally tangent: still the small disc
        (2.0, 2.0, 0.0, 4 * math.pi),  # equal and concentric: pi * 2^2
        # equal radii 1, d = 1: 2 r^2 acos(d / 2r) - (d / 2) sqrt(4 r^2 - d^2) = 2 * 1.047198 - 0.5 * 1.732051
        (1.0, 1.0, 1.0, 1.228369699),
        # equal radii 1, d = sqrt 2: 2 * acos(sqrt2 / 2) - (sqrt2 / 2) * sqrt 2 = pi/2 - 1
        (1.0, 1.0, math.sqrt(2), 0.570796327),
        # 3-4-5: 9 acos(18/30) + 16 acos(32/40) - 0.5 sqrt(2*4*6*12) = 8.345656 + 10.296018 - 12
        (3.0, 4.0, 5.0, 6.641674703),
    ],
)
def test_circle_intersection_area(r1, r2, d, expected):
    assert circle_intersection_area(r1, r2, d) == pytest.approx(expected, abs=1e-8)
    assert circle_intersection_area(r2, r1, d) == pytest.approx(expected, abs=1e-8)  # symmetric


def test_tolerance_widens_the_disjoint_case():
    # d just inside tangency: a sliver without tolerance, nothing with the reward's 1e-5
    assert circle_intersection_area(1.0, 1.0, 2.0 - 5e-6) > 0.0
    assert circle_intersection_area(1.0, 1.0, 2.0 - 5e-6, tolerance=1e-5) == 0.0


def test_tolerance_widens_the_nested_case():
    # |r1 - r2| = 2, d = 2 + 5e-6 is a lens without tolerance, the whole small disc with it
    assert circle_intersection_area(1.0, 3.0, 2.0 + 5e-6) < math.pi
    assert circle_intersection_area(1.0, 3.0, 2.0 + 5e-6, tolerance=1e-5) == math.pi  # exactly the small disc


def test_diameter_circle():
    # (0,0)-(6,8): centre (3, 4), radius 10 / 2 = 5, plus the epsilon
    assert diameter_circle([0, 0], [6, 8], radius_eps=0.5) == pytest.approx((3.0, 4.0, 5.5))


def test_points_dice_equal_circles_is_twice_the_iou():
    # same circle r = 5: I = U = 25 pi = 78.539816 -> 2 * 78.539816 / (78.539816 + 1e-5)
    assert points_dice([[0, 0], [10, 0]], [[10, 0], [0, 0]]) == pytest.approx(2 * 78.539816 / 78.539826, abs=1e-7)


def test_points_dice_disjoint():
    assert points_dice([[0, 0], [2, 0]], [[10, 0], [12, 0]]) == 0.0


def test_points_dice_nested():
    # r = 1 inside r = 2, same centre: I = pi, U = 4 pi + pi - pi = 4 pi -> 2 pi / (4 pi + 1e-5)
    assert points_dice([[49, 50], [51, 50]], [[48, 50], [52, 50]]) == pytest.approx(0.5, abs=1e-6)


def test_points_dice_radius_epsilon_gives_coincident_points_a_tiny_circle():
    # both pairs coincident at one spot: radii 0 -> 0 by the disjoint branch (0 >= 0 + 0)
    assert points_dice([[5, 5], [5, 5]], [[5, 5], [5, 5]]) == 0.0
    # with radius 1e-5: nested, I = U = pi * 1e-10 -> 2 * 3.14159e-10 / (3.14159e-10 + 1e-5) = 6.2830e-5
    coincident = points_dice([[5, 5], [5, 5]], [[5, 5], [5, 5]], radius_eps=1e-5, tolerance=1e-5)
    assert coincident == pytest.approx(6.2830e-5, rel=1e-3)

"""Ground truth from masks: inclusive tight box, two inscribed-circle key points, frame mapping, failure modes."""

import numpy as np
import pytest

from monailabel_app.core.frames import ImageFrame
from monailabel_app.data.ground_truth import EmptyMaskError, ground_truth_from_mask, key_points, mask_box


def disc(shape, centre, radius):
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    return (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2


def test_box_is_inclusive_pixel_indices():
    mask = np.zeros((100, 100), np.uint8)
    mask[10:30, 20:80] = 255  # rows 10..29, columns 20..79
    assert mask_box(mask) == [20, 10, 79, 29]


def test_two_blobs_give_their_centres():
    # disc A radius 8 at (20, 30): its centre is 8.06 px from the nearest background pixel (offset (8, 1), 65 > 64),
    # the deepest point. Disc A lies inside that first circle, so the second circle is disc B's centre (60, 30),
    # depth sqrt(26) = 5.10, 40 px away, so 40 - 8.06 > 5.10: disjoint.
    mask = disc((50, 80), (20, 30), 8) | disc((50, 80), (60, 30), 5)
    assert ground_truth_from_mask(mask.astype(np.uint8) * 255) == {
        "bbox_2d": [12, 22, 65, 38],  # x 20-8 .. 60+5, y 30-8 .. 30+8
        "point_2d": [[20, 30], [60, 30]],
    }


def test_rectangle_points_are_deepest_and_disjoint():
    # 60 x 20 rectangle at rows 10..29, cols 20..79: depth 10 on rows 19-20, columns 29..70.
    # Circle 1: the tied pixel nearest their centroid (49.5, 19.5); (49, 19) wins the 4-way tie in row-major order.
    # Circle 2: radius min(depth, distance - 10) = 10 wherever the distance is >= 20; among those, the farthest from
    # (49, 19) is (70, 20) (sqrt(21^2 + 1^2) = 21.02).
    mask = np.zeros((100, 100), bool)
    mask[10:30, 20:80] = True
    assert key_points(mask) == [[49, 19], [70, 20]]


def test_thin_line():
    # a 1 px line y = 5, x = 10..40: depth 1 everywhere, circle 1 at the middle (25, 5);
    # circle 2 (radius 1, needs distance >= 2) goes to the farthest end: (10, 5) and (40, 5) tie, row-major -> (10, 5)
    mask = np.zeros((20, 50), bool)
    mask[5, 10:41] = True
    assert ground_truth_from_mask(mask) == {"bbox_2d": [10, 5, 40, 5], "point_2d": [[25, 5], [10, 5]]}


def test_disc_falls_back_to_a_circle_that_excludes_the_first_centre():
    # a disc radius 10 has no room outside its own inscribed circle; the fallback circle maximises
    # min(depth, distance to centre) ~ min(10 - t, t): about t = 5 from the centre
    mask = disc((100, 100), (50, 50), 10)
    (x1, y1), (x2, y2) = key_points(mask)
    assert (x1, y1) == (50, 50)
    assert mask[y2, x2]
    assert 4.0 <= np.hypot(x2 - 50, y2 - 50) <= 6.0


def test_a_sub_pixel_gap_is_no_room_for_a_second_circle():
    # disc radius 8 at (20, 30) (first circle radius sqrt 65 = 8.062) plus one pixel at (29, 30), 9 px out: a disjoint
    # circle there has radius min(1, 9 - 8.062) = 0.94 < 1 px, so the fallback applies instead of the protruding pixel
    mask = disc((50, 50), (20, 30), 8)
    mask[30, 29] = True
    first, second = key_points(mask)
    assert first == [20, 30]
    assert second != [29, 30]
    assert 3.0 <= np.hypot(second[0] - 20, second[1] - 30) <= 5.0


def test_two_pixels_give_two_distinct_points():
    mask = np.zeros((5, 5), bool)
    mask[2, 2:4] = True
    assert sorted(map(tuple, key_points(mask))) == [(2, 2), (3, 2)]


def test_single_pixel_gives_the_same_point_twice():
    mask = np.zeros((10, 10), np.uint8)
    mask[3, 4] = 1
    assert ground_truth_from_mask(mask) == {"bbox_2d": [4, 3, 4, 3], "point_2d": [[4, 3], [4, 3]]}


def test_image_border_bounds_the_circles():
    # a full 10 x 10 mask: without the zero padding the transform has no background and every depth is meaningless;
    # with it the deepest pixels are the central four at depth 5
    mask = np.ones((10, 10), bool)
    (x1, y1), (x2, y2) = key_points(mask)
    assert (x1, y1) in {(4, 4), (4, 5), (5, 4), (5, 5)}
    assert mask_box(mask) == [0, 0, 9, 9]
    assert (x2, y2) != (x1, y1)


def test_key_points_lie_in_the_mask_and_apart():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.zeros((64, 64), bool)
        for _ in range(3):
            x, y, r = rng.integers(5, 59), rng.integers(5, 59), rng.integers(1, 12)
            mask |= disc((64, 64), (x, y), r)
        (x1, y1), (x2, y2) = key_points(mask)
        assert mask[y1, x1] and mask[y2, x2]
        assert (x1, y1) != (x2, y2)


def test_frame_maps_to_the_model_frame():
    # original 200 wide x 100 high, model sees 50 x 50: x / 4, y / 2
    mask = np.zeros((100, 200), bool)
    mask[10:30, 20:80] = True
    gt = ground_truth_from_mask(mask, ImageFrame(orig_width=200, orig_height=100, model_width=50, model_height=50))
    assert gt["bbox_2d"] == [5.0, 5.0, 19.75, 14.5]  # [20/4, 10/2, 79/4, 29/2]
    assert gt["point_2d"][0] == [49 / 4, 19 / 2]


def test_frame_must_match_the_mask():
    with pytest.raises(ValueError):
        ground_truth_from_mask(np.ones((10, 20)), ImageFrame.identity(10, 20))  # width 10, height 20: transposed


def test_empty_mask_raises_empty_mask_error():
    with pytest.raises(EmptyMaskError):
        ground_truth_from_mask(np.zeros((8, 8), np.uint8))
    assert issubclass(EmptyMaskError, ValueError)


def test_non_2d_mask_raises():
    with pytest.raises(ValueError):
        mask_box(np.ones((2, 8, 8)))

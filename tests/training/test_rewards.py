"""MedReasoner GRPO rewards: every branch of both modes against hand-computed values.

Shorthand in the comments (docs/method.md §4):
  L(v) = 0.1 + 0.9 ln(1 + 3v) / ln 4            (smooth_log)
  E(v, c) = 0.1 + 0.9 (s(v) - s(2)) / (s(0) - s(2) + 1e-8), s(v) = 1 / (1 + e^(3(v - c)))   (smooth_exp)
  P(r, a, b) = round(clip(0.7 r + 0.3 r (a + b) / 2, 0, 1), 4)   (penalize)
GT throughout: box [0, 0, 100, 100] (area 10000, diagonal 141.421356), points (30, 30) and (70, 70), whose circle has
centre (50, 50) and radius sqrt(800) = 28.284271.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monailabel_app.training.rewards import REWARD_KEYS, compute_reward, compute_rewards

GT = {"bbox_2d": [0, 0, 100, 100], "point_2d": [[30, 30], [70, 70]]}
PERFECT_BOX = [0, 0, 100, 100]
PERFECT_POINTS = ([30, 30], [70, 70])


def response(bbox=PERFECT_BOX, p1=PERFECT_POINTS[0], p2=PERFECT_POINTS[1], think="the lesion is bright"):
    """A response in the released prompt's format: single-quoted keys, as the example answer shows."""
    body = "{" + ", ".join(f"'{k}': {json.dumps(v)}" for k, v in (("bbox", bbox), ("points_1", p1), ("points_2", p2)))
    return f"<think>{think}</think><answer>{body}}}</answer>"


def test_returns_exactly_the_reward_keys_as_floats():
    reward = compute_reward(response(), GT)
    assert tuple(reward) == REWARD_KEYS
    assert all(type(v) is float for v in reward.values())


def test_perfect_answer_soft():
    # IoU = 10000 / (10000 + 1e-5) ~ 1 -> L = 1 -> P(1, 1, 1) = 1
    # same circle: I = U -> dice ~ 2 -> L(2) = 0.1 + 0.9 ln 7 / ln 4 = 1.3633 -> clipped to 1
    reward = compute_reward(response(), GT, "soft")
    assert reward["format_think"] == 1.0 and reward["format_answer"] == 1.0
    assert reward["bbox_iou"] == 1.0 and reward["points_dice"] == 1.0
    assert reward["bbox_align"] == reward["bbox_scale"] == reward["points_align"] == reward["points_angle"] == 0.0
    assert reward["score"] == 4.0


def test_perfect_answer_hard():
    # align distance 0 -> E(0, 1) = 0.99999999 -> 1.0; scale distance 0 -> E(0, 0.5) -> 1.0; |cos| = 1 -> L(1) = 1
    reward = compute_reward(response(), GT, "hard")
    for key in REWARD_KEYS[1:]:
        assert reward[key] == 1.0, key
    assert reward["score"] == 8.0


# ---------------------------------------------------------------- format: think


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>{}</answer>", 0.0),  # no think block
        ("<think>unclosed <answer>{}</answer>", 0.0),
        ("<think> \n\t </think><answer>{}</answer>", 0.2),  # blank
        ("<think></think><think>late content</think>", 0.2),  # only the first block counts
        ("<think>\nreasoning\n</think>", 1.0),
    ],
)
def test_think_format(text, expected):
    assert compute_reward(text, GT)["format_think"] == expected


# ---------------------------------------------------------------- format: answer


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("no answer block at all", 0.0),
        ("<answer>{'bbox': [0, 0, 100, 100]</answer>", 0.2),  # not JSON
        ("<answer>{bbox: [0, 0, 100, 100]}</answer>", 0.2),  # unquoted key: not JSON
        ("<answer>[0, 0, 100, 100]</answer>", 0.2),  # JSON but not an object
        ("<answer>```json\n{'bbox': [0, 0, 1, 1], 'points_1': [0, 0], 'points_2': [1, 1]}\n```</answer>", 0.2),
        ("<answer>{'bbox': [0, 0, 1, 1], 'points_1': [0, 0], 'points_2': [1, 1]} done</answer>", 0.2),
        ("<answer>{'bbox': [0, 0, 1, 1], 'points_1': [0, 0], 'points_2': [1, 1], 'why': 'it's'}</answer>", 0.2),
        ("<answer>{'bbox': [0, 0, 100, 100], 'points_1': [30, 30]}</answer>", 0.4),  # points_2 missing
        ("<answer>{'bbox': [0, 0, 100], 'points_1': ['30', 30], 'points_2': [70, 70]}</answer>", 0.4),  # both bad
        ("<answer>{'bbox': [0, 0, 100, '100'], 'points_1': [30, 30], 'points_2': [70, 70]}</answer>", 0.6),
        ("<answer>{'bbox': [0, 0, 100, 100], 'points_1': [30, 30], 'points_2': [70]}</answer>", 0.6),
        ("<answer>{'bbox': [0, 0, 100, 100], 'points_1': [30, 30], 'points_2': [[70, 70]]}</answer>", 0.6),
        ("<answer>{'bbox': [0, 0, 100, 100], 'points_1': [30, 30], 'points_2': null}</answer>", 0.6),
        ('<answer> {"bbox": [0.5, 0, 100, 100], "points_1": [30, 30], "points_2": [70, 70]} </answer>', 1.0),
        ("<answer>{'bbox': [0, 0, 100, 100], 'points_1': [30, 30], 'points_2': [70, 70]}</answer>", 1.0),
        # the first answer block is the one graded
        ("<answer>nope</answer><answer>{'bbox': [0, 0, 1, 1], 'points_1': [0, 0], 'points_2': [1, 1]}</answer>", 0.2),
    ],
)
def test_answer_format(answer, expected):
    assert compute_reward("<think>t</think>" + answer, GT)["format_answer"] == expected


def test_booleans_count_as_numbers_like_the_reference():
    # isinstance(False, int) is True: [false, false, 100, 100] is the box [0, 0, 100, 100]
    reward = compute_reward(
        "<answer>{'bbox': [false, false, 100, 100], 'points_1': [30, 30], 'points_2': [70, 70]}</answer>", GT
    )
    assert reward["format_answer"] == 1.0
    assert reward["bbox_iou"] == 1.0


def test_nan_counts_as_a_number_but_never_yields_nan():
    # NaN in the box: format 1. Soft IoU term: both GT points fail the NaN comparison -> 0.5 * 0.5 = 0.25;
    # area max(0, 100 - NaN) * 100 = 0 -> 0.5; intersection width max(0, 100 - NaN) = 0 -> IoU 0 -> L = 0.1;
    # P(0.1, 0.25, 0.5) = 0.07 + 0.03 * 0.375 = 0.08125 (rounds to 0.0812 or 0.0813 depending on float noise)
    text = response(bbox=[float("nan"), 0, 100, 100])  # json.dumps writes NaN
    soft = compute_reward(text, GT, "soft")
    assert soft["format_answer"] == 1.0
    assert soft["bbox_iou"] == pytest.approx(0.08125, abs=6e-5)
    # hard: the align and scale distances are NaN in the reference; here those terms are 0
    hard = compute_reward(text, GT, "hard")
    assert hard["bbox_align"] == 0.0 and hard["bbox_scale"] == 0.0
    assert math.isfinite(hard["score"])


def test_missing_keys_still_earn_the_present_parts():
    # reference behaviour: format 0.4, but the valid box is scored (1.0); no points -> 0
    reward = compute_reward("<think>t</think><answer>{'bbox': [0, 0, 100, 100]}</answer>", GT)
    assert (reward["format_answer"], reward["bbox_iou"], reward["points_dice"]) == (0.4, 1.0, 0.0)
    assert reward["score"] == pytest.approx(1.0 + 0.4 + 1.0)


def test_malformed_box_keeps_point_terms():
    reward = compute_reward(response(bbox=[0, 0, 100]), GT)
    assert (reward["format_answer"], reward["bbox_iou"], reward["points_dice"]) == (0.6, 0.0, 1.0)
    assert reward["score"] == pytest.approx(1.0 + 0.6 + 0.0 + 1.0)


def test_no_answer_block_scores_only_think():
    reward = compute_reward("<think>I think so</think> bbox [0, 0, 100, 100]", GT, "hard")
    assert reward["score"] == 1.0


# ---------------------------------------------------------------- box terms, soft


@pytest.mark.parametrize(
    "bbox, expected",
    [
        # IoU 5000/10000 = 0.5 -> L = 0.1 + 0.9 ln 2.5 / ln 4 = 0.694868; both GT points in -> 1;
        # area 20000 is not < 2 * 10000 -> 0.5; P = 0.694868 * (0.7 + 0.3 * 0.75) = 0.642753
        ([0, 0, 200, 100], 0.6428),
        # IoU 0.5; (30, 30) in, (70, 70) out -> 0.5; area 5000 is not > 0.5 * 10000 -> 0.5;
        # P = 0.694868 * (0.7 + 0.3 * 0.5) = 0.590637
        ([0, 0, 100, 50], 0.5906),
        # IoU 400/10000 = 0.04 -> L = 0.1 + 0.9 ln 1.12 / ln 4 = 0.173574; no GT point in -> 0.25; area 400 -> 0.5;
        # P = 0.173574 * (0.7 + 0.3 * 0.375) = 0.141029
        ([40, 40, 60, 60], 0.1410),
        # zero-area box on (30, 30): IoU 0 -> L(0) = 0.1; one point in (closed box) -> 0.5; area 0 -> 0.5;
        # P = 0.1 * (0.7 + 0.3 * 0.5) = 0.085
        ([30, 30, 30, 30], 0.085),
        # IoU 1: P(1, 1, 1) = 1
        ([0, 0, 100, 100], 1.0),
    ],
)
def test_soft_box_iou_term(bbox, expected):
    assert compute_reward(response(bbox=bbox), GT, "soft")["bbox_iou"] == expected


def test_disjoint_box_iou_zero():
    # IoU 0 -> 0.1; no point in -> 0.25; equal area -> 1; P = 0.1 * (0.7 + 0.3 * 0.625) = 0.08875 (+- rounding)
    assert compute_reward(response(bbox=[200, 200, 300, 300]), GT)["bbox_iou"] == pytest.approx(0.08875, abs=6e-5)


# ---------------------------------------------------------------- point terms, soft


@pytest.mark.parametrize(
    "p1, p2, expected",
    [
        # circle centre (50, 70), r 50 holds the GT circle (d = 20 <= 50 - 28.28): dice = 2 * 800 pi / 2500 pi = 0.64;
        # L(0.64) = 0.1 + 0.9 ln 2.92 / ln 4 = 0.795686; (50, 20) in, (50, 120) out -> 0.5; 100 px apart -> 1;
        # P = 0.795686 * (0.7 + 0.3 * 0.75) = 0.736009
        ([50, 20], [50, 120], 0.7360),
        # centre (50, 50), r 60 holds the GT circle: dice = 2 * 800 / 3600 = 0.444444; L = 0.1 + 0.9 ln(7/3) / ln 4
        # = 0.650077; both outside the GT box -> 0.25; spread 120 -> 1; P = 0.650077 * 0.8875 = 0.576943
        ([-10, 50], [110, 50], 0.5769),
        # coincident points: radius 1e-5 -> dice ~ 2.5e-13 -> L = 0.1; both in -> 1; spread 0 -> 0.5;
        # P = 0.1 * (0.7 + 0.3 * 0.75) = 0.0925
        ([50, 50], [50, 50], 0.0925),
        # the GT circle itself, points in reverse order: dice ~ 2 -> clipped 1
        ([70, 70], [30, 30], 1.0),
    ],
)
def test_soft_points_dice_term(p1, p2, expected):
    assert compute_reward(response(p1=p1, p2=p2), GT, "soft")["points_dice"] == expected


def test_points_exactly_ten_pixels_apart_are_not_spread():
    # (45, 50)-(55, 50): 10 px is not > 10 -> 0.5. Circle r 5 inside the GT circle: dice = 2 * 25 / 800 = 0.0625;
    # L = 0.1 + 0.9 ln 1.1875 / ln 4 = 0.211567; both in -> 1; P = 0.211567 * (0.7 + 0.3 * 0.75) = 0.195700
    assert compute_reward(response(p1=[45, 50], p2=[55, 50]), GT)["points_dice"] == 0.1957


def test_radius_epsilon_of_coincident_pairs():
    # GT and prediction both a single point at (50, 50): radii 1e-5, nested -> dice = 2 pi 1e-10 / (pi 1e-10 + 1e-5)
    # = 6.2830e-5 -> L = 0.1 + 0.9 ln(1.00018849) / ln 4 = 0.100122; spread 0.5 -> P = 0.100122 * 0.925 = 0.092613
    gt = {"bbox_2d": [0, 0, 100, 100], "point_2d": [[50, 50], [50, 50]]}
    assert compute_reward(response(p1=[50, 50], p2=[50, 50]), gt)["points_dice"] == 0.0926


def test_points_far_outside_score_the_floor():
    # disjoint circles: dice 0 -> 0.1; both out -> 0.25; 56.6 px apart -> 1; P = 0.1 * 0.8875 = 0.08875
    reward = compute_reward(response(p1=[130, 30], p2=[170, 70]), GT)
    assert reward["points_dice"] == pytest.approx(0.08875, abs=6e-5)


# ---------------------------------------------------------------- hard terms


def test_hard_box_shifted_right():
    # box [10, 0, 110, 100]: IoU 9000 / 11000 = 0.818182 -> L = 0.1 + 0.9 ln 3.454545 / ln 4 = 0.904823
    # mean edge offset (10 + 0 + 10 + 0) / 4 = 5 -> 5 / 141.421366 = 0.035355 -> E(0.035355, 1) = 0.995000
    # same width and height -> scale distance 0 -> 1; both points in, equal area -> no penalty
    reward = compute_reward(response(bbox=[10, 0, 110, 100]), GT, "hard")
    assert (reward["bbox_iou"], reward["bbox_align"], reward["bbox_scale"]) == (0.9048, 0.995, 1.0)


def test_hard_box_wrong_shape():
    # box [0, 0, 200, 50]: same area, aspect 4 vs 1 -> sqrt(0^2 + ln(4)^2) = 1.386 -> capped 1
    # E(1, 0.5): s(1) = 1/(1 + e^1.5) = 0.182426, s(2) = 1/(1 + e^4.5) = 0.010987, s(0) = 1/(1 + e^-1.5) = 0.817574
    #   -> 0.1 + 0.9 * 0.171439 / 0.806587 = 0.291293; (70, 70) is out -> 0.5; area equal -> 1
    #   -> P = 0.291293 * (0.7 + 0.3 * 0.75) = 0.269446
    # align: (0 + 0 + 100 + 50) / 4 = 37.5 -> 0.265165 -> E = 0.948375 -> P = 0.948375 * 0.925 = 0.877246
    reward = compute_reward(response(bbox=[0, 0, 200, 50]), GT, "hard")
    assert (reward["bbox_scale"], reward["bbox_align"]) == (0.2694, 0.8772)


@pytest.mark.parametrize(
    "bbox, expected_align",
    [
        # offset (200 * 4) / 4 = 200 -> 200 / 141.421366 = 1.414213 (inside the [0, 2] clip)
        # s(1.414213) = 1 / (1 + e^(3 * 0.414213)) = 0.223975 -> E = 0.1 + 0.9 * (0.223975 - 0.047426) / 0.905148
        # = 0.275547; no GT point inside -> 0.25, same area -> 1; P = 0.275547 * 0.8875 = 0.244548
        ([200, 200, 300, 300], 0.2445),
        # offset 400 -> 2.83, clipped to 2 -> E(2, 1) = 0.1; P = 0.1 * 0.8875 = 0.08875 (+- rounding)
        ([400, 400, 500, 500], pytest.approx(0.08875, abs=6e-5)),
    ],
)
def test_hard_box_align_far_away(bbox, expected_align):
    assert compute_reward(response(bbox=bbox), GT, "hard")["bbox_align"] == expected_align


def test_hard_degenerate_box_zeroes_every_box_term():
    # zero height: the aspect ratio divides by zero, and the reference then drops the IoU term too
    assert compute_reward(response(bbox=[30, 30, 30, 30]), GT, "soft")["bbox_iou"] == 0.085
    hard = compute_reward(response(bbox=[30, 30, 30, 30]), GT, "hard")
    assert hard["bbox_iou"] == hard["bbox_align"] == hard["bbox_scale"] == 0.0


def test_hard_inverted_box_zeroes_every_box_term():
    # x2 < x1: log of a negative area raises in the scale term; soft keeps only the floor IoU term:
    # IoU 0 -> 0.1, no point inside -> 0.25, area 0 -> 0.5: P = 0.1 * 0.8125 = 0.08125
    assert compute_reward(response(bbox=[100, 0, 0, 100]), GT, "soft")["bbox_iou"] == pytest.approx(0.08125, abs=6e-5)
    hard = compute_reward(response(bbox=[100, 0, 0, 100]), GT, "hard")
    assert hard["bbox_iou"] == hard["bbox_align"] == hard["bbox_scale"] == 0.0


def test_reward_epsilons_on_a_sub_pixel_box():
    # GT box 1e-5 wide, so the reward's epsilons dominate. Prediction shifted by 2e-6, both GT points inside, same area.
    # IoU = 8e-11 / (1e-10 + 1e-10 - 8e-11 + 1e-5) = 7.9999e-6 -> L = 0.1 + 0.9 ln(1 + 2.4e-5) / ln 4 = 0.100016 -> 0.1
    #   (union + 1e-6 would give 8e-5 -> 0.100156 -> 0.1002)
    # align: offset (2e-6 + 0 + 2e-6 + 0) / 4 = 1e-6, over (diagonal 1.41421e-5 + 1e-5) = 0.041421 -> E = 0.994094
    #   (the diagonal alone would give 0.070711 -> 0.989503 -> 0.9895)
    gt = {"bbox_2d": [0, 0, 1e-5, 1e-5], "point_2d": [[3e-6, 3e-6], [7e-6, 7e-6]]}
    reward = compute_reward(response(bbox=[2e-6, 0, 1.2e-5, 1e-5]), gt, "hard")
    assert (reward["bbox_iou"], reward["bbox_align"], reward["bbox_scale"]) == (0.1, 0.9941, 1.0)


def test_hard_perpendicular_points():
    # (30, 70)-(70, 30): the same circle -> dice term 1; direction (40, -40) vs (40, 40): cos 0 -> L(0) = 0.1 -> 0.1
    # align: same order (0 + 40) / 2 + (0 + 40) / 2 = 40, swapped also 40 -> 40 / 2 = 20 -> 20 / 141.421366 =
    # 0.141421 -> E(0.141421, 1) = 0.976842
    reward = compute_reward(response(p1=[30, 70], p2=[70, 30]), GT, "hard")
    assert (reward["points_dice"], reward["points_angle"], reward["points_align"]) == (1.0, 0.1, 0.9768)


def test_hard_point_alignment_is_order_free():
    reward = compute_reward(response(p1=[70, 70], p2=[30, 30]), GT, "hard")
    assert (reward["points_align"], reward["points_angle"]) == (1.0, 1.0)


def test_hard_coincident_points():
    # zero-length predicted direction: |cos| = 0 / (56.57 * 1e-8) = 0 -> 0.1; spread 0.5 -> P = 0.1 * 0.925
    reward = compute_reward(response(p1=[50, 50], p2=[50, 50]), GT, "hard")
    assert reward["points_angle"] == 0.0925


# ---------------------------------------------------------------- API


def test_ground_truth_as_json_string():
    assert compute_reward(response(), json.dumps(GT))["score"] == 4.0


def test_ground_truth_with_numpy_numbers_behaves_like_json_numbers():
    # a single-pixel GT (box [50, 50, 50, 50]) from numpy: the hard scale term must raise ZeroDivisionError on 0 / 0
    # as with JSON ints (numpy would return NaN), which zeroes every box term. Soft keeps the IoU term:
    # IoU 0 -> 0.1; the GT point is inside [0, 0, 100, 100] -> 1; area 10000 is not < 2 * 0 -> 0.5 -> 0.1 * 0.925
    gt = {"bbox_2d": np.array([50, 50, 50, 50]), "point_2d": np.array([[50, 50], [50, 50]])}
    assert compute_reward(response(), gt, "soft")["bbox_iou"] == 0.0925
    assert compute_reward(response(), gt, "hard")["bbox_iou"] == 0.0


@pytest.mark.parametrize(
    "bad_gt",
    [
        {"bbox_2d": [0, 0, 1, 1]},
        {"bbox_2d": [0, 0, 1], "point_2d": [[0, 0], [1, 1]]},
        {"bbox_2d": [0, 0, 1, 1], "point_2d": [[0, 0]]},
        {"bbox_2d": [0, 0, 1, float("nan")], "point_2d": [[0, 0], [1, 1]]},
        {"bbox_2d": [0, 0, 1, 1], "point_2d": [[0, True], [1, 1]]},
        {"bbox_2d": [0, 0, 1, 1], "point_2d": 7},
    ],
)
def test_malformed_ground_truth_raises(bad_gt):
    with pytest.raises(ValueError):
        compute_reward(response(), bad_gt)


def test_unknown_mode_raises():
    with pytest.raises(ValueError):
        compute_reward(response(), GT, "base")


def test_batch_helper():
    rewards = compute_rewards([response(), "garbage"], [GT, GT], "soft")
    assert [r["score"] for r in rewards] == [4.0, 0.0]
    with pytest.raises(ValueError):
        compute_rewards([response()], [GT, GT])


# ---------------------------------------------------------------- properties

_coordinate = st.one_of(  # numbers the reference accepts, and a few things it must not
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["1", None, [], [1, 2]]),
)


def _json_text(value):
    return json.dumps(value)  # emits NaN / Infinity for non-finite floats, as json.loads accepts them


@settings(max_examples=300, deadline=None)
@given(text=st.text(), mode=st.sampled_from(["soft", "hard"]))
def test_any_text_never_raises_and_stays_in_range(text, mode):
    reward = compute_reward(text, GT, mode)
    assert 0.0 <= reward["score"] <= (4.0 if mode == "soft" else 8.0)


@settings(max_examples=300, deadline=None)
@given(
    bbox=st.lists(_coordinate, min_size=3, max_size=5),
    p1=st.lists(_coordinate, min_size=1, max_size=3),
    p2=st.lists(_coordinate, min_size=1, max_size=3),
    think=st.text(max_size=5),
    mode=st.sampled_from(["soft", "hard"]),
)
def test_random_answers_never_raise_and_stay_in_range(bbox, p1, p2, think, mode):
    text = f"<think>{think}</think><answer>" + _json_text({"bbox": bbox, "points_1": p1, "points_2": p2})
    reward = compute_reward(text + "</answer>", GT, mode)
    assert all(math.isfinite(v) for v in reward.values())
    assert 0.0 <= reward["score"] <= (4.0 if mode == "soft" else 8.0)
    unused = ("bbox_align", "bbox_scale", "points_align", "points_angle")
    if mode == "soft":
        assert all(reward[key] == 0.0 for key in unused)


@settings(max_examples=200, deadline=None)
@given(
    coords=st.lists(st.floats(-50, 200, allow_nan=False), min_size=8, max_size=8),
    mode=st.sampled_from(["soft", "hard"]),
)
def test_well_formed_answers_get_full_format_and_bounded_terms(coords, mode):
    reward = compute_reward(response(bbox=coords[:4], p1=coords[4:6], p2=coords[6:]), GT, mode)
    assert reward["format_think"] == reward["format_answer"] == 1.0
    assert all(0.0 <= reward[key] <= 1.0 for key in REWARD_KEYS[1:])
    assert 2.0 <= reward["score"] <= (4.0 if mode == "soft" else 8.0)

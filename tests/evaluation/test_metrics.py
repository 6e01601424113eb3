"""Paper metrics: box IoU, pDice, mask Dice, per-sample failures and the x100 group means."""

import math

import numpy as np
import pytest

from monailabel_app.evaluation.metrics import aggregate, box_iou_metric, mask_dice, points_dice_metric, sample_metrics

GT = {"bbox_2d": [0, 0, 10, 10], "point_2d": [[3, 5], [7, 5]]}


@pytest.mark.parametrize(
    "pred, expected",
    [
        ([0, 0, 5, 10], 50 / (100 + 1e-6)),  # nested half: 50 / (50 + 100 - 50 + 1e-6)
        ([20, 20, 30, 30], 0.0),  # disjoint
        ([10, 0, 20, 10], 0.0),  # touching at x = 10
        ([0, 0, 10, 10], 100 / (100 + 1e-6)),  # identical: the metric's 1e-6, not the reward's 1e-5
        (None, 0.0),  # no box parsed
        ([0, 0, 10], 0.0),  # three numbers
        ([0, float("nan"), 10, 10], 0.0),
        (["a", 0, 10, 10], 0.0),
    ],
)
def test_box_iou_metric(pred, expected):
    assert box_iou_metric(pred, GT["bbox_2d"]) == pytest.approx(expected, abs=1e-12)


def test_box_iou_metric_uses_its_own_epsilon():
    # 1x1 boxes: 1 / (1 + 1e-6) = 0.999999; the reward's 1e-5 would give 0.99999
    assert box_iou_metric([0, 0, 1, 1], [0, 0, 1, 1]) == pytest.approx(0.999999, abs=1e-9)


@pytest.mark.parametrize(
    "pred, expected",
    [
        # the GT circle (centre (5, 5), r 2): I = U = 4 pi = 12.566371 -> 2 * 12.566371 / (12.566371 + 1e-5)
        ([[7, 5], [3, 5]], 2 * 12.566371 / 12.566381),
        # r 1 concentric inside r 2: I = pi, U = 4 pi -> 2 pi / (4 pi + 1e-5) = 0.5 (unclipped, no radius epsilon)
        ([[4, 5], [6, 5]], 2 * math.pi / (4 * math.pi + 1e-5)),
        # disjoint circles
        ([[20, 5], [24, 5]], 0.0),
        # coincident predicted points: radius 0 shares nothing
        ([[5, 5], [5, 5]], 0.0),
        (None, 0.0),
        ([[3, 5]], 0.0),
        ([[3, 5], [7, None]], 0.0),
    ],
)
def test_points_dice_metric(pred, expected):
    assert points_dice_metric(pred, GT["point_2d"]) == pytest.approx(expected, abs=1e-9)


def test_mask_dice():
    gt = np.zeros((4, 4), np.uint8)
    gt[:2] = 255  # 8 pixels, a 0/255 PNG
    pred = np.zeros((4, 4), bool)
    pred[1:3] = True  # 8 pixels, 4 shared
    assert mask_dice(pred, gt) == pytest.approx(2 * 4 / (16 + 1e-6))
    assert mask_dice(gt > 0, gt) == pytest.approx(16 / (16 + 1e-6))
    assert mask_dice(~(gt > 0), gt) == 0.0  # disjoint
    assert mask_dice(None, gt) == 0.0  # segmentation failed


def test_mask_dice_counts_any_nonzero_value_as_foreground():
    # label maps (1), PNGs (255) and soft masks (0.2) alike: |P| = |G| = 4, all shared -> 8 / (8 + 1e-6)
    assert mask_dice(np.full((2, 2), 0.2), np.ones((2, 2), np.uint8)) == pytest.approx(1.0)


def test_mask_dice_empty_masks():
    empty = np.zeros((4, 4), bool)
    assert mask_dice(empty, empty) == 0.0  # 0 / (0 + 1e-6), as the paper's formula gives
    assert mask_dice(np.ones((4, 4), bool), empty) == 0.0


def test_mask_dice_shape_mismatch_raises():
    with pytest.raises(ValueError):
        mask_dice(np.ones((4, 4)), np.ones((4, 5)))


def test_sample_metrics_failures_count_zero():
    gt_mask = np.zeros((10, 10), bool)
    gt_mask[3:7, 3:7] = True
    result = sample_metrics(
        None, None, GT, masks={"points": None, "box": gt_mask, "joint": np.zeros((10, 10))}, gt_mask=gt_mask
    )
    assert result == {"iou": 0.0, "pdice": 0.0, "dice_points": 0.0, "dice_box": pytest.approx(1.0), "dice_joint": 0.0}


def test_sample_metrics_without_masks():
    result = sample_metrics([0, 0, 10, 10], [[3, 5], [7, 5]], GT)
    assert set(result) == {"iou", "pdice"}
    assert result["iou"] == pytest.approx(1.0) and result["pdice"] == pytest.approx(2.0)


def test_sample_metrics_needs_gt_mask_for_dice():
    with pytest.raises(ValueError):
        sample_metrics(None, None, GT, masks={"joint": np.ones((2, 2))})


def test_aggregate_means_x100_overall_and_per_group():
    records = [
        {"iou": 0.5, "pdice": 1.0, "dice_joint": 0.8, "supercategory": "lung", "category": "nodule", "modality": "CT"},
        {"iou": 0.1, "pdice": 0.0, "dice_joint": 0.4, "supercategory": "lung", "category": "mass", "modality": "CT"},
        # a failed sample: metrics missing or NaN, still in every mean
        {"iou": float("nan"), "supercategory": "skin", "category": "lesion", "modality": "dermoscopy"},
    ]
    result = aggregate(records)
    # overall iou (0.5 + 0.1 + 0) / 3 = 0.2 -> 20; pdice (1 + 0 + 0) / 3 -> 33.33; dice (0.8 + 0.4 + 0) / 3 -> 40
    assert result["overall"] == {
        "iou": pytest.approx(20.0),
        "pdice": pytest.approx(100 / 3),
        "dice_joint": pytest.approx(40.0),
        "count": 3,
    }
    assert list(result["overall"])[:3] == ["iou", "pdice", "dice_joint"]
    # lung: iou (0.5 + 0.1) / 2 = 0.3 -> 30; dice (0.8 + 0.4) / 2 -> 60
    assert result["supercategory"]["lung"]["iou"] == pytest.approx(30.0)
    assert result["supercategory"]["lung"]["dice_joint"] == pytest.approx(60.0)
    assert result["supercategory"]["skin"] == {"iou": 0.0, "pdice": 0.0, "dice_joint": 0.0, "count": 1}
    assert result["category"]["nodule"]["pdice"] == pytest.approx(100.0)
    assert result["modality"]["CT"]["count"] == 2


def test_aggregate_unknown_group_and_explicit_metrics():
    result = aggregate([{"iou": 0.25, "pdice": 0.5}], metric_names=["iou"], group_keys=["category"])
    assert result["overall"] == {"iou": 25.0, "count": 1}
    assert result["category"] == {"unknown": {"iou": 25.0, "count": 1}}


def test_aggregate_empty():
    assert aggregate([])["overall"] == {"count": 0}

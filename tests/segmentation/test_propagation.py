"""An answer on a key slice carried through a volume by the real LiteMedSAM (`grounding/propagation.py`), on a
synthetic CT with an ellipsoid lesion over 9 slices: the 3D Dice against the truth and nothing past its ends."""

from __future__ import annotations

import numpy as np
import pytest

from monailabel_app.demo.sample_studies import ellipsoid_ct
from monailabel_app.grounding.propagation import StopRule, propagate
from monailabel_app.imaging.windowing import to_display_rgb
from monailabel_app.segmentation.factory import build_segmenter

SLICES, KEY, HALF_DEPTH = 16, 7, 5  # ellipsoid_ct's defaults: the lesion on slices KEY-4 .. KEY+4


@pytest.fixture(scope="module")
def litemedsam():
    return build_segmenter("litemedsam", cache_size=SLICES)  # each slice encoded once for the whole module


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_a_key_slice_box_propagates_to_the_whole_lesion(litemedsam):
    volume, truth = ellipsoid_ct()
    render = lambda k: to_display_rgb(volume[k], "soft_tissue")  # noqa: E731
    rows, columns = np.nonzero(truth[KEY])
    key = litemedsam.segment(render(KEY), box=[columns.min(), rows.min(), columns.max(), rows.max()])
    result = propagate(litemedsam, render, SLICES, KEY, key.mask, key.low_res_logits)
    label = np.zeros_like(truth)
    for k, mask in result.masks.items():
        label[k] = mask
    lesion_slices = np.flatnonzero(truth.reshape(SLICES, -1).any(axis=1))
    print(
        f"3D Dice {dice(label, truth):.3f}, slices {result.first}..{result.last}, {result.stopped}, "
        f"{result.seconds_per_slice:.3f} s per slice"
    )
    assert dice(label, truth) >= 0.8
    assert lesion_slices.min() - 1 <= result.first and result.last <= lesion_slices.max() + 1
    assert result.first <= KEY - 2 and result.last >= KEY + 2  # it did travel
    assert set(result.stopped) == {"up", "down"} and result.seconds_per_slice > 0


def test_every_stop_rule_can_stop_it(litemedsam):
    volume, truth = ellipsoid_ct()
    render = lambda k: to_display_rgb(volume[k], "soft_tissue")  # noqa: E731
    key = litemedsam.segment(render(KEY), box=[50, 34, 90, 66])
    never = StopRule(min_area_ratio=0.0, max_area_ratio=1e9, min_overlap=0.0, min_score=-1.0, max_grey_shift=1e9)
    loose = propagate(litemedsam, render, SLICES, KEY, key.mask, key.low_res_logits, never)
    assert loose.stopped["up"] in ("edge", "empty") and loose.last > KEY + HALF_DEPTH  # nothing stops it past the end
    strict = StopRule(min_area_ratio=0.99, max_area_ratio=1.01)
    assert set(propagate(litemedsam, render, SLICES, KEY, key.mask, None, strict).stopped.values()) <= {
        "shrank",
        "grew",
    }

"""A volume propagated by SAM2's video predictor (`segmentation/sam2_tracking.py`, `grounding/propagation.py`) with a
tiny random SAM2 built through the same code path, and with the real MedSAM2 when MEDSAM2_CHECKPOINT points at one."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from sam2.utils.misc import load_video_frames

from monailabel_app.demo.sample_studies import ellipsoid_ct
from monailabel_app.grounding import propagation
from monailabel_app.grounding.propagation import StopRule, propagate
from monailabel_app.imaging.windowing import to_display_rgb
from monailabel_app.segmentation.factory import build_segmenter
from monailabel_app.segmentation.sam2 import Sam2Segmenter
from monailabel_app.segmentation.sam2_tracking import SliceFrames, tracking_state
from monailabel_app.segmentation.segmenter import VolumeTracker
from tests.segmentation.test_sam2_segmenter import tiny_sam2

SLICES, KEY = 16, 7  # ellipsoid_ct's defaults: the lesion on slices KEY-4 .. KEY+4
NEVER = StopRule(min_area_ratio=0.0, max_area_ratio=1e9, min_overlap=0.0, min_score=-1.0, max_grey_shift=1e9)


@pytest.fixture(scope="module")
def volume():
    volume, truth = ellipsoid_ct()
    return (lambda k: to_display_rgb(volume[k], "soft_tissue")), truth


@pytest.fixture(scope="module")
def tiny_tracker():
    return Sam2Segmenter(tiny_sam2(), name="tiny_sam2", cache_size=2)


def test_the_state_is_the_one_the_package_builds(tiny_tracker, volume, tmp_path):
    """Same keys and settings as `init_state` on a JPEG folder of the same slices, and frames within JPEG's loss."""
    render, truth = volume
    for k in range(3):
        Image.fromarray(render(k)).save(tmp_path / f"{k}.jpg", quality=100)
    model = tiny_tracker.model
    package = model.init_state(str(tmp_path), offload_video_to_cpu=True)
    ours = tracking_state(model, SliceFrames(render, [0, 1, 2], model.image_size), *truth.shape[1:])
    assert set(ours) == set(package)
    for key in ("num_frames", "video_height", "video_width", "offload_video_to_cpu", "device", "storage_device"):
        assert ours[key] == package[key], key
    jpeg_frames, _, _ = load_video_frames(str(tmp_path), model.image_size, True, compute_device=torch.device("cpu"))
    for k in range(3):
        difference = (ours["images"][k] - jpeg_frames[k]).abs()
        assert difference.mean() < 0.02 and ours["images"][k].shape == jpeg_frames[k].shape


def test_a_sam2_segmenter_tracks_the_volume_with_its_video_predictor(tiny_tracker, volume):
    render, truth = volume
    assert isinstance(tiny_tracker, VolumeTracker)
    key_mask = truth[KEY].astype(bool)
    result = propagate(tiny_tracker, render, SLICES, KEY, key_mask, None, NEVER)
    assert result.method == "video predictor" and result.to_json(KEY)["method"] == "video predictor"
    assert np.array_equal(result.masks[KEY], key_mask)
    assert (result.first, result.last) == (0, SLICES - 1)  # under NEVER only an empty mask stops it: none is
    assert result.stopped == {"up": "edge", "down": "edge"}
    assert all(mask.shape == key_mask.shape and mask.dtype == bool for mask in result.masks.values())
    assert result.seconds_per_slice > 0


def test_tracking_goes_outwards_and_stops_at_its_window(tiny_tracker, volume):
    render, truth = volume
    key_mask = truth[KEY].astype(bool)
    up = [(k, picture) for k, picture, _, _ in tiny_tracker.track(render, SLICES, KEY, key_mask, 1, max_slices=3)]
    down = [k for k, _, _, _ in tiny_tracker.track(render, SLICES, KEY, key_mask, -1, max_slices=100)]
    assert [k for k, _ in up] == [KEY + 1, KEY + 2, KEY + 3] and down == list(range(KEY - 1, -1, -1))
    assert all(np.array_equal(picture, render(k)) for k, picture in up)  # the picture the tracker saw
    assert list(tiny_tracker.track(render, SLICES, SLICES - 1, truth[SLICES - 1], 1, max_slices=5)) == []


def test_a_series_longer_than_the_window_says_so(tiny_tracker, volume, monkeypatch):
    render, truth = volume
    monkeypatch.setattr(propagation, "MAX_TRACKED_SLICES", 3)  # 256 in use: a 16-slice test series would not reach it
    result = propagate(tiny_tracker, render, SLICES, KEY, truth[KEY].astype(bool), None, NEVER)
    assert (result.first, result.last) == (KEY - 3, KEY + 3)
    assert result.stopped == {"up": "window", "down": "window"}
    monkeypatch.setattr(propagation, "MAX_TRACKED_SLICES", KEY)  # down reaches slice 0 exactly: the edge, no cut
    result = propagate(tiny_tracker, render, SLICES, KEY, truth[KEY].astype(bool), None, NEVER)
    assert result.first == 0 and result.stopped == {"up": "window", "down": "edge"}


def test_one_volume_is_tracked_at_a_time_and_a_reader_that_stops_frees_the_tracker(tiny_tracker, volume):
    render, truth = volume
    first = tiny_tracker.track(render, SLICES, KEY, truth[KEY].astype(bool), 1, max_slices=5)
    next(first)  # a session open, as propagate holds one while its stop rule reads
    finished = threading.Event()

    def second_volume():
        list(tiny_tracker.track(render, SLICES, KEY, truth[KEY].astype(bool), -1, max_slices=2))
        finished.set()

    waiting = threading.Thread(target=second_volume)
    waiting.start()
    assert not finished.wait(3.0)  # it waits for the first (2 slices take the tiny SAM2 well under a second)
    first.close()  # the reader stops early: the session ends and the lock goes with it
    assert finished.wait(120)
    waiting.join()


def test_slice_segmenters_keep_the_neighbour_prompt(volume):
    litemedsam = build_segmenter("litemedsam", cache_size=4)
    assert not isinstance(litemedsam, VolumeTracker)


@pytest.mark.skipif(not os.environ.get("MEDSAM2_CHECKPOINT"), reason="set MEDSAM2_CHECKPOINT to a MedSAM2 .pt file")
def test_real_medsam2_tracks_the_lesion(volume):
    render, truth = volume
    medsam2 = build_segmenter("medsam2", os.environ["MEDSAM2_CHECKPOINT"])
    result = propagate(medsam2, render, SLICES, KEY, truth[KEY].astype(bool))
    label = np.zeros_like(truth)
    for k, mask in result.masks.items():
        label[k] = mask
    dice = 2.0 * np.logical_and(label, truth).sum() / (label.sum() + truth.sum())
    lesion_slices = np.flatnonzero(truth.reshape(SLICES, -1).any(axis=1))
    assert dice >= 0.8 and lesion_slices.min() - 1 <= result.first and result.last <= lesion_slices.max() + 1

"""The segmenter's embedding cache: another picture (other pixels, or the same slice under another window) never gets
another's embedding, and the cache keeps within its memory bound, least recently used out first."""

from __future__ import annotations

import numpy as np
import pytest

from monailabel_app.demo.sample_studies import ellipsoid_ct
from monailabel_app.imaging.windowing import to_display_rgb
from monailabel_app.segmentation.embedding_cache import MIB, EmbeddingCache, held_bytes, picture_key
from monailabel_app.segmentation.sam import SamSegmenter
from tests.segmentation.test_segmenters import ct_like_slice, tiny_random_sam
from tests.support.encoder_probe import count_encoder_forwards

BOX = [5.0, 5.0, 40.0, 40.0]


@pytest.fixture
def tiny_segmenter() -> SamSegmenter:
    return SamSegmenter(tiny_random_sam(), name="tiny", cache_size=None, cache_mb=64)


def test_other_pixels_or_another_window_miss_and_the_same_picture_hits(tiny_segmenter):
    forwards = count_encoder_forwards(tiny_segmenter)
    volume, _ = ellipsoid_ct()
    soft, lung = to_display_rgb(volume[7], "soft_tissue"), to_display_rgb(volume[7], "lung")
    neighbour = to_display_rgb(volume[8], "soft_tissue")
    one_pixel_off = soft.copy()
    one_pixel_off[0, 0, 0] ^= 1

    outputs = [tiny_segmenter.segment(picture, box=BOX) for picture in (soft, lung, neighbour, one_pixel_off)]
    assert [output.cache_hit for output in outputs] == [False] * 4
    assert tiny_segmenter.encoder_calls == 4 == forwards[0]

    again = tiny_segmenter.segment(to_display_rgb(volume[7], "soft_tissue"), box=BOX)  # a new array, same picture
    assert again.cache_hit and tiny_segmenter.encoder_calls == 4
    assert np.array_equal(again.mask, outputs[0].mask)  # its own embedding: the same mask as the first time


def test_equal_bytes_in_another_shape_or_dtype_are_another_key():
    picture, _ = ct_like_slice(40, 60)
    assert picture_key(picture) != picture_key(picture.reshape(60, 40, 3))
    assert picture_key(picture) != picture_key(picture.view(np.int8))
    assert picture_key(picture) == picture_key(picture.copy())


def test_the_cache_keeps_within_its_memory_bound_least_recently_used_out_first():
    segmenter = SamSegmenter(tiny_random_sam(), name="tiny", cache_size=None)
    pictures = [ct_like_slice(64, 64, seed=seed)[0] for seed in range(6)]
    segmenter.segment(pictures[0], box=BOX)
    one = segmenter._predictors.bytes  # one tiny embedding (1 x 32 x 4 x 4 floats)
    assert one == held_bytes(segmenter._predictors.get(picture_key(pictures[0]))) > 0
    segmenter.limit_cache(cache_mb=3.5 * one / MIB)  # room for three

    for picture in (pictures[0], pictures[1], pictures[2], pictures[0], pictures[3], pictures[4]):
        segmenter.segment(picture, box=BOX)
        assert segmenter._predictors.bytes <= 3.5 * one
    assert len(segmenter._predictors) == 3
    calls = segmenter.encoder_calls
    assert segmenter.segment(pictures[0], box=BOX).cache_hit  # touched after 1 and 2, so kept
    assert not segmenter.segment(pictures[1], box=BOX).cache_hit  # the least recently used went first
    assert segmenter.encoder_calls == calls + 1


def test_an_entry_larger_than_the_bound_is_used_but_not_kept():
    segmenter = SamSegmenter(tiny_random_sam(), name="tiny", cache_size=None, cache_mb=1e-6)
    picture, _ = ct_like_slice(64, 64)
    first = segmenter.segment(picture, box=BOX)
    assert first.mask.shape == (64, 64) and len(segmenter._predictors) == 0
    assert not segmenter.segment(picture, box=BOX).cache_hit and segmenter.encoder_calls == 2


def test_the_bounds_must_leave_room():
    with pytest.raises(ValueError):
        EmbeddingCache(0)
    with pytest.raises(ValueError):
        EmbeddingCache(MIB, max_entries=0)

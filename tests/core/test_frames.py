"""Coordinates go original -> model frame -> original without drift, for the frames Qwen2.5-VL really produces."""

from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from monailabel_app.core.frames import ImageFrame


def qwen_frame(width: int, height: int) -> ImageFrame:
    model_h, model_w = smart_resize(height, width, factor=28, min_pixels=56 * 56, max_pixels=1280 * 28 * 28)
    return ImageFrame(width, height, model_w, model_h)


@settings(max_examples=300, deadline=None)
@given(st.integers(28, 3000), st.integers(28, 3000), st.floats(0, 1), st.floats(0, 1))
def test_point_round_trip_within_a_pixel(width, height, fx, fy):
    frame = qwen_frame(width, height)
    x, y = fx * (width - 1), fy * (height - 1)
    back = frame.point_to_original(frame.point_to_model((x, y)))
    assert abs(back[0] - x) < 1 and abs(back[1] - y) < 1


@settings(max_examples=300, deadline=None)
@given(st.integers(28, 3000), st.integers(28, 3000), st.floats(0, 1), st.floats(0, 1))
def test_whole_pixel_answers_land_within_half_a_model_pixel(width, height, fx, fy):
    """A model answers in whole pixels of its frame: the error in the original is at most half a model pixel."""
    frame = qwen_frame(width, height)
    x, y = fx * (width - 1), fy * (height - 1)
    mx, my = (round(v) for v in frame.point_to_model((x, y)))
    bx, by = frame.point_to_original((mx, my))
    assert abs(bx - x) <= frame.scale_x / 2 + 1e-9 and abs(by - y) <= frame.scale_y / 2 + 1e-9


def test_box_maps_with_separate_axis_scales():
    frame = ImageFrame(orig_width=1000, orig_height=500, model_width=500, model_height=250)
    assert frame.box_to_original((10, 20, 30, 40)) == (20, 40, 60, 80)
    assert frame.box_to_model((20, 40, 60, 80)) == (10, 20, 30, 40)
    assert ImageFrame.identity(64, 32).point_to_original((5, 7)) == (5, 7)

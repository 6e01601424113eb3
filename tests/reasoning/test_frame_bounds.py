"""The reasoner is fed the frame the released checkpoints were trained on (at most 840 x 840) unless told otherwise,
and a checkpoint whose processor allows less keeps its own bound. Token counts are the processor's real output."""

import numpy as np

from monailabel_app.demo.tiny_models import TINY_MAX_PIXELS, build_processor, build_tokenizer
from monailabel_app.grounding.settings import GroundingSettings
from monailabel_app.reasoning import model_input
from monailabel_app.reasoning.frame_bounds import (
    QWEN_MAX_PIXELS,
    QWEN_MIN_PIXELS,
    TRAINED_FRAME_MAX_PIXELS,
    capped_max_pixels,
    visual_tokens,
)
from monailabel_app.training.config import GRPOConfig

RADIOGRAPH = np.random.default_rng(0).integers(0, 256, size=(2048, 2048, 3), dtype=np.uint8)


def _real_size_processor():
    """The tiny tokenizer with Qwen2.5-VL's released image bounds (3,136..12,845,056 pixels)."""
    return build_processor(build_tokenizer(), QWEN_MIN_PIXELS, QWEN_MAX_PIXELS)


def _image_tokens(processor, features) -> int:
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return int((features["input_ids"] == pad).sum())


def test_a_2048_radiograph_goes_in_at_the_training_frame_by_default():
    processor = _real_size_processor()
    own, own_frame = model_input.encode(processor, RADIOGRAPH, "Where?", None, None)
    capped, capped_frame = model_input.encode(processor, RADIOGRAPH, "Where?", None, GroundingSettings().max_pixels)
    assert (own_frame.model_width, own_frame.model_height) == (2044, 2044)
    assert _image_tokens(processor, own) == visual_tokens(2044, 2044) == 5329
    assert (capped_frame.model_width, capped_frame.model_height) == (812, 812)  # smart resize floors to 28s
    assert _image_tokens(processor, capped) == visual_tokens(812, 812) == 841
    u_mrg = RADIOGRAPH[:840, :840]
    _, kept = model_input.encode(processor, u_mrg, "Where?", None, GroundingSettings().max_pixels)
    assert (kept.model_width, kept.model_height) == (840, 840)  # the training pictures pass through unchanged


def test_serving_evaluation_and_retraining_share_the_default():
    assert GroundingSettings().max_pixels == GRPOConfig().max_pixels == TRAINED_FRAME_MAX_PIXELS == 705_600


def test_the_bound_is_a_cap_a_smaller_processor_keeps_its_own():
    tiny = build_processor(build_tokenizer())
    _, frame = model_input.encode(tiny, RADIOGRAPH, "Where?", None, TRAINED_FRAME_MAX_PIXELS)
    _, own = model_input.encode(tiny, RADIOGRAPH, "Where?", None, None)
    assert (frame.model_width, frame.model_height) == (own.model_width, own.model_height) == (280, 280)
    assert capped_max_pixels(None, TINY_MAX_PIXELS) == TINY_MAX_PIXELS
    assert capped_max_pixels(TRAINED_FRAME_MAX_PIXELS, QWEN_MAX_PIXELS) == TRAINED_FRAME_MAX_PIXELS
    assert capped_max_pixels(QWEN_MAX_PIXELS, QWEN_MAX_PIXELS) == QWEN_MAX_PIXELS

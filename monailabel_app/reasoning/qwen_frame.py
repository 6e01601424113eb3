"""Fixes the frame a served Qwen2.5-VL answers in by sending it an image already resized to that frame.

An engine or server (vLLM, a hosted API) runs Qwen's "smart resize" itself and does not say which size it chose, yet the
answer's pixel coordinates refer to that size. Smart resize maps a size that is already a multiple of 28 inside its
pixel bounds onto itself, so an image resized here to `smart_resize(original)` reaches the model unchanged and the
model frame is exactly the size that was sent. The bounds must be the ones the server applies (`frame_bounds`: the
app defaults to the released checkpoints' training frame, at most 840 x 840), and U-MRG's 840x840 pictures pass
through untouched.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from monailabel_app.core.frames import ImageFrame
from monailabel_app.reasoning.frame_bounds import QWEN_MAX_PIXELS, QWEN_MIN_PIXELS, QWEN_PATCH_FACTOR


def resize_to_model_frame(
    image: np.ndarray, min_pixels: int = QWEN_MIN_PIXELS, max_pixels: int = QWEN_MAX_PIXELS
) -> tuple[Image.Image, ImageFrame]:
    """The picture to send (RGB, bicubic as Qwen's processor resizes) and the frame the answer will be in."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize  # loads torch: only when used

    model_height, model_width = smart_resize(height, width, QWEN_PATCH_FACTOR, min_pixels, max_pixels)
    picture = Image.fromarray(image)
    if (model_width, model_height) != (width, height):
        picture = picture.resize((model_width, model_height), Image.Resampling.BICUBIC)
    return picture, ImageFrame(width, height, model_width, model_height)

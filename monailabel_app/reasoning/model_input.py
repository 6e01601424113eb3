"""The one builder of what the reasoner is fed: the chat turn, the image's place in it, and the processor call.

Inference (every backend), GRPO rollouts and the tiny test models all build their input here, so the model is trained
on byte-identical prompts to those it answers in a clinic: one user turn with the image first and the prompt text
after it, the checkpoint's own chat template (Qwen2.5-VL's default system turn is added by the template), and the
generation prompt for the assistant. Pixel bounds (`min_pixels`, `max_pixels`) are Qwen2.5-VL's smart-resize bounds;
`None` keeps the checkpoint processor's own, and `max_pixels` is a cap (`frame_bounds.capped_max_pixels`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image
from transformers import BatchFeature

from monailabel_app.core.frames import ImageFrame
from monailabel_app.reasoning.frame_bounds import capped_max_pixels


def user_turn(prompt: str) -> list[dict]:
    """The chat messages of one question: the image, then the prompt text."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def chat_text(processor, prompt: str) -> str:
    """The prompt as the model reads it, up to the assistant's generation prompt (image placeholders unexpanded)."""
    return processor.apply_chat_template(user_turn(prompt), add_generation_prompt=True, tokenize=False)


def pixel_bounds(processor, min_pixels: Optional[int], max_pixels: Optional[int]) -> dict:
    """Processor keyword arguments for the resize bounds; empty when the checkpoint's own apply."""
    if min_pixels is None and max_pixels is None:
        return {}
    size = dict(processor.image_processor.size)
    if min_pixels is not None:
        size["shortest_edge"] = min_pixels
    if max_pixels is not None:
        size["longest_edge"] = capped_max_pixels(max_pixels, size["longest_edge"])
    return {"size": size}


def encode_batch(
    processor,
    images: list[np.ndarray],
    prompts: list[str],
    min_pixels: Optional[int] = None,
    max_pixels: Optional[int] = None,
) -> tuple[BatchFeature, list[ImageFrame]]:
    """Tensors for several questions in one batch (batched serving), each image resized on its own, prompts padded on
    the left so every row's answer starts at the same position; and each image's frame."""
    for image in images:
        _check_rgb(image)
    features = processor(
        images=[Image.fromarray(image) for image in images],
        text=[chat_text(processor, prompt) for prompt in prompts],
        return_tensors="pt",
        padding=True,
        padding_side="left",
        **pixel_bounds(processor, min_pixels, max_pixels),
    )
    return features, _model_frames(processor, images, features)


def _model_frames(processor, images: list[np.ndarray], features: BatchFeature) -> list[ImageFrame]:
    """Each image's frame as the processor resized it (`image_grid_thw` x patch size), never re-derived."""
    patch = processor.image_processor.patch_size
    return [
        ImageFrame(image.shape[1], image.shape[0], int(grid_w) * patch, int(grid_h) * patch)
        for image, (_, grid_h, grid_w) in zip(images, features["image_grid_thw"].tolist())
    ]


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")


def encode(
    processor,
    image: np.ndarray,
    prompt: str,
    min_pixels: Optional[int] = None,
    max_pixels: Optional[int] = None,
    answer: str = "",
) -> tuple[BatchFeature, ImageFrame]:
    """Tensors for one image and prompt (a batch of one) and the frame the model sees the image in.

    `answer` is appended after the generation prompt (teacher forcing for the tiny models); inference and rollouts
    leave it empty.
    """
    _check_rgb(image)
    features = processor(
        images=[Image.fromarray(image)],
        text=[chat_text(processor, prompt) + answer],
        return_tensors="pt",
        **pixel_bounds(processor, min_pixels, max_pixels),
    )
    return features, _model_frames(processor, [image], features)[0]

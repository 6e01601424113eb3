"""What the suite asks: the app's prompt cut to a fixed length, a radiograph-like picture, and the box a parsed answer
would give. Random weights answer nonsense, so everything that would come from an answer is fixed here."""

from __future__ import annotations

import numpy as np

from monailabel_app.reasoning import model_input
from monailabel_app.reasoning.prompt import build_prompt

QUESTION = "Which structure would explain the dull percussion note over the right lower chest?"


def fitted_prompt(processor, target_text_tokens: int) -> str:
    """The app's prompt cut so the whole chat text (system turn and template included) is about `target` tokens."""
    tokenizer = processor.tokenizer
    template_tokens = len(tokenizer(model_input.chat_text(processor, ""))["input_ids"]) - 1  # less the image slot
    prompt_ids = tokenizer(build_prompt(QUESTION, think=True))["input_ids"]
    return tokenizer.decode(prompt_ids[: max(1, target_text_tokens - template_tokens)])


def sample_picture(side: int) -> np.ndarray:
    """A chest-X-ray-like grey picture (content does not change the timing, only the size does)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side] / side
    body = 60 + 120 * np.exp(-(((xx - 0.5) / 0.35) ** 2 + ((yy - 0.55) / 0.45) ** 2))
    grey = np.clip(body + rng.normal(0, 8, (side, side)), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def fixed_prompt_for_segmenter(side: int) -> tuple[list[float], list[list[float]]]:
    """A box and two points inside it, as a parsed answer would give (random weights give no parseable answer)."""
    box = [0.3 * side, 0.35 * side, 0.6 * side, 0.7 * side]
    return box, [[0.4 * side, 0.5 * side], [0.5 * side, 0.55 * side]]

"""The reasoner contract: image + prompt text in, raw answer text and the frame it answered in out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from monailabel_app.core.frames import ImageFrame


@dataclass
class ReasonerOutput:
    text: str  # raw generated text, special tokens removed
    frame: ImageFrame  # the frame the model saw; its coordinates refer to it
    prefill_s: float = 0.0
    decode_s: float = 0.0
    new_tokens: int = 0
    batch_size: int = 1  # questions that shared the generate call (batched serving)


class Reasoner(Protocol):
    """Anything that answers a grounding prompt about an RGB uint8 image (H, W, 3)."""

    def generate(self, image: np.ndarray, prompt: str) -> ReasonerOutput: ...

    def close(self) -> None:
        """Frees what the backend holds (GPU memory, an engine, connections) now; the object is not used after."""

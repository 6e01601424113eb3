"""What the rows share (the plan, the reasoner once built, figures one row leaves for another) and how a row says it
cannot run here: optional packages are looked for, never required, so a missing one skips its row only."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from transformers import Qwen2_5_VLForConditionalGeneration

from benchmarks.gpu.plan import Plan
from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner

WHEEL_NAMES = {"segment_anything": "segment-anything", "hydra": "hydra-core"}  # import name -> what to pip install


class Skip(Exception):
    """A row that cannot run here; the message says why."""


@dataclass
class Bench:
    """What the rows share: the plan, the prompt and picture, the reasoner once built, figures for comparisons."""

    plan: Plan
    tokenizer: object = None
    processor: object = None
    model: Optional[Qwen2_5_VLForConditionalGeneration] = None
    reasoner: Optional[TransformersReasoner] = None
    prompt: str = ""
    picture: Optional[np.ndarray] = None
    figures: dict = field(default_factory=dict)
    pictures_made: int = 0

    def fresh_picture(self) -> np.ndarray:
        """The picture with one pixel changed: segmenters cache embeddings by content, and each run must encode."""
        picture = self.picture.copy()
        picture[0, 0, :] = self.pictures_made % 256
        picture[0, 1, :] = self.pictures_made // 256 % 256
        self.pictures_made += 1
        return picture


def require(module: str, why: str = "") -> None:
    """Skip the row when an optional package is missing (looked up without importing it)."""
    if importlib.util.find_spec(module) is None:
        raise Skip(f"{WHEEL_NAMES.get(module, module)} not installed{f' ({why})' if why else ''}")

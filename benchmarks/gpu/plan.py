"""The run's sizes and repeats: real ones on a GPU, tiny ones on the CPU (`--smoke`), so one code path serves both."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from monailabel_app.reasoning.frame_bounds import TRAINED_FRAME_MAX_PIXELS


@dataclass(frozen=True)
class Plan:
    """Sizes and repeats of one run: real ones on a GPU, tiny ones on the CPU (`--smoke`)."""

    smoke: bool
    device: torch.device
    dtype: torch.dtype
    decode_tokens: int  # fixed answer length of the decode and end-to-end rows
    repeats: int  # timed runs after one warm-up
    concurrent_tokens: int  # answer length in the 16-question row (16 one-by-one calls must fit the budget)
    grpo_tokens: int
    sam_image_size: int
    sam2_image_size: int
    row_budget_s: float  # a row stops repeating once this is spent (it always finishes the run in progress)
    picture_side: int = 840  # 840 x 840 = 900 visual tokens, the app's trained frame
    large_side: int = 2048  # a radiograph at full size: 5,329 visual tokens at the processor's own bound
    large_cap: int = TRAINED_FRAME_MAX_PIXELS  # the app's default bound: 812 x 812, 841 visual tokens
    text_tokens: int = 150
    concurrent_questions: int = 16
    grpo_group: int = 8
    grpo_micro_batch: int = 2

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"


GPU_PLAN = Plan(
    smoke=False,
    device=torch.device("cuda"),
    dtype=torch.bfloat16,
    decode_tokens=128,
    repeats=3,
    concurrent_tokens=32,
    grpo_tokens=256,
    sam_image_size=1024,
    sam2_image_size=512,
    row_budget_s=40.0,
)
SMOKE_PLAN = Plan(
    smoke=True,
    device=torch.device("cpu"),
    dtype=torch.float32,
    decode_tokens=16,
    repeats=2,
    concurrent_tokens=4,
    grpo_tokens=12,
    sam_image_size=256,
    sam2_image_size=128,
    row_budget_s=10.0,
    large_side=448,
    large_cap=224 * 224,
)

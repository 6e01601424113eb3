"""Which prompts each GPU takes at each GRPO step: a seeded shuffle per data epoch, split across ranks, resumable.

The sampler walks the whole run, data epoch after data epoch, as one Lightning epoch, and starts each iteration at
the step the run has reached. The order depends only on (seed, data epoch), so a run restarted from a checkpoint -
saved mid-epoch by a crash-safe periodic save, or at a stop - takes exactly the prompts an uninterrupted run would
have taken, whatever Lightning thinks of epoch boundaries at that point.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch.utils.data import Sampler


class PromptBatchSampler(Sampler[list[int]]):
    """Yields this rank's share of each remaining step's prompts, as sample indices.

    `prompts_per_step` counts all ranks together; each rank takes its contiguous slice of every global batch. A data
    epoch is `num_samples // prompts_per_step` steps (the incomplete rest is dropped); `total_steps` may span several.
    `steps_done` tells where the run stands (it is read at the start of every iteration).
    """

    def __init__(
        self,
        num_samples: int,
        prompts_per_step: int,
        total_steps: int,
        steps_done: Callable[[], int],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if prompts_per_step % world_size:
            raise ValueError(f"prompts_per_step ({prompts_per_step}) must be a multiple of the GPU count {world_size}")
        if num_samples < prompts_per_step:
            raise ValueError(f"{num_samples} training samples; one GRPO step needs {prompts_per_step} prompts")
        self.num_samples = num_samples
        self.prompts_per_step = prompts_per_step
        self.prompts_per_rank = prompts_per_step // world_size
        self.steps_per_epoch = num_samples // prompts_per_step
        self.total_steps = total_steps
        self.steps_done = steps_done
        self.seed = seed
        self.rank = rank

    def __len__(self) -> int:
        return self.total_steps

    def __iter__(self) -> Iterator[list[int]]:
        order, order_epoch = [], None
        for step in range(self.steps_done(), self.total_steps):
            epoch, batch = divmod(step, self.steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = self.epoch_order(epoch), epoch
            start = batch * self.prompts_per_step + self.rank * self.prompts_per_rank
            yield order[start : start + self.prompts_per_rank]

    def epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

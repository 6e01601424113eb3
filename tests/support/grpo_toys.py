"""Toy data, a toy reward and tiny GRPO settings for the GRPO tests: small enough for a few CPU seconds per run."""

from __future__ import annotations

import numpy as np

from monailabel_app.data.sample import GroundingSample
from monailabel_app.training.config import GRPOConfig

QUESTIONS = ("Where is the lesion?", "Find the nodule.", "Which organ looks abnormal?", "Show the polyp.")


def toy_samples(count: int, seed: int = 0, size: int = 56) -> list[GroundingSample]:
    """Random small images (the tiny processor upsizes them to 112 px) with a valid ground truth in their pixels;
    the box's left edge is 10 + index % 10, so a reward function can tell which sample it is scoring."""
    rng = np.random.default_rng(seed)
    return [
        GroundingSample(
            sample_id=f"toy-{index}",
            image=rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8),
            question=QUESTIONS[index % len(QUESTIONS)],
            ground_truth={"bbox_2d": [10 + index % 10, 12, 40, 44], "point_2d": [[20, 24], [30, 34]]},
        )
        for index in range(count)
    ]


def answer_opens_a_tag(text: str, ground_truth: dict) -> dict:
    """Toy format reward: 1 when the answer contains a '<' (a tag opening), else 0.

    A random tiny policy does this about a third of the time, so groups carry signal from the first step and the
    rate can climb to nearly 1 within a few dozen GRPO steps on a CPU.
    """
    return {"score": float("<" in text)}


def constant_reward(text: str, ground_truth: dict) -> dict:
    return {"score": 1.0}


def tiny_config(**changes) -> GRPOConfig:
    """Groups of 4 on 2 prompts per step, 8-token answers, short prompts, CPU precision, no progress bar."""
    settings = dict(
        group_size=4,
        prompts_per_step=2,
        mini_batch_prompts=2,
        micro_batch_size=4,
        max_new_tokens=8,
        think=False,
        lr=1e-3,
        epochs=1,
        max_steps=2,
        precision="32-true",
        progress_bar=False,
        save_every_steps=1,
    )
    return GRPOConfig(**(settings | changes))

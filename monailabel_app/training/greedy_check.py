"""A before/after figure for a retraining run: the mean greedy reward of a reasoner on the saved labels.

Not a held-out validation (a hospital's few labels all go to training); it tells an admin whether the run moved the
reasoner the right way on the cases it was given, with the same prompt, decoding and reward as inference and training.
"""

from __future__ import annotations

from statistics import fmean
from typing import Sequence

from monailabel_app.data.sample import GroundingSample
from monailabel_app.reasoning.prompt import build_prompt
from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner
from monailabel_app.training.config import GRPOConfig
from monailabel_app.training.rewards import compute_reward
from monailabel_app.training.rollout import ground_truth_in_frame

MAX_CHECK_SAMPLES = 32  # bounds the check's time on a site with many labels


def mean_greedy_reward(reasoner_path: str, samples: Sequence[GroundingSample], config: GRPOConfig) -> float:
    reasoner = TransformersReasoner(
        reasoner_path,
        max_new_tokens=config.max_new_tokens,
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
    )
    scores = []
    try:
        for sample in samples[:MAX_CHECK_SAMPLES]:
            prompt = build_prompt(sample.question, config.think, config.template)
            answer = reasoner.generate(sample.image, prompt)
            truth = ground_truth_in_frame(sample.ground_truth, answer.frame)
            scores.append(compute_reward(answer.text, truth, config.reward_mode)["score"])
    finally:
        reasoner.close()  # training loads the same checkpoint next, on the same GPU
    return round(fmean(scores), 4)

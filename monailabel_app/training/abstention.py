"""The reward that trains "not in this image", and the one reward function training and its checks score with.

A negative sample (`data.sample.NEGATIVE_TRUTH`: a clinician's saved "no finding", or a volume's slices well outside
its label) has no box to score, so the paper's reward can't score it. With `abstain_reward` w > 0 it earns:
- the paper's think-format term, as every answer does;
- `abstain`: +w for the "not in this image" answer (`reasoning.answer_parser`'s contract), -w for a box (a confident
  mask on a healthy picture is the error that matters), 0 for an answer that is neither.
A positive keeps the paper's reward exactly; abstaining there earns no box or point terms, which is its cost.
With w = 0 (the paper preset, and the default) the reward is the released one, unchanged, and negatives are set aside
before training (`trainable_samples`): there is nothing they could teach.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Mapping, Sequence

from monailabel_app.data.sample import GroundingSample
from monailabel_app.reasoning.answer_parser import parse_answer, says_absent
from monailabel_app.training.config import GRPOConfig
from monailabel_app.training.rewards import REWARD_KEYS, compute_reward, format_think

ABSTAIN_KEY = "abstain"
ANY_FRAME = 1e9  # the answer's form is all that matters here; its coordinates are never scored against a frame

RewardFunction = Callable[[str, Mapping], Mapping[str, float]]


def training_reward(config: GRPOConfig) -> RewardFunction:
    """The paper's reward in `config.reward_mode`, or with the abstention term when `config.abstain_reward` > 0."""
    if config.abstain_reward <= 0:
        return partial(compute_reward, mode=config.reward_mode)
    return partial(reward_with_abstention, mode=config.reward_mode, weight=config.abstain_reward)


def reward_with_abstention(response: str, ground_truth: Mapping, mode: str, weight: float) -> dict[str, float]:
    if ground_truth.get("absent") is not True:
        return {**compute_reward(response, ground_truth, mode), ABSTAIN_KEY: 0.0}
    terms = {key: 0.0 for key in REWARD_KEYS if key != "score"}
    terms["format_think"] = format_think(response)
    if says_absent(response):
        terms[ABSTAIN_KEY] = weight
    else:
        terms[ABSTAIN_KEY] = -weight if parse_answer(response, ANY_FRAME, ANY_FRAME).ok else 0.0
    return {"score": sum(terms.values()), **terms}


def trainable_samples(samples: Sequence[GroundingSample], config: GRPOConfig) -> tuple[list[GroundingSample], int]:
    """(the samples a run trains on, how many negatives were set aside because `abstain_reward` is 0)."""
    if config.abstain_reward > 0:
        return list(samples), 0
    kept = [sample for sample in samples if not sample.is_negative]
    return kept, len(samples) - len(kept)

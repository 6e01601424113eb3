"""A before/after figure for a retraining run: a reasoner's greedy answers on saved labels, scored.

`mean_greedy_reward` is the mean training reward on (up to `MAX_CHECK_SAMPLES` of) the labels the run trained on: not
a held-out validation, it tells an admin whether the run moved the reasoner the right way on the cases it was given,
with the same prompt, decoding and reward as inference and training. `greedy_box_ious` gives the per-sample box IoU
(the paper's headline metric; an unusable answer scores 0) that the publish check compares on held-out labels. On a
negative (`abstention.py`) that per-sample figure is 1 for "not in this image" and 0 for anything else.
"""

from __future__ import annotations

from statistics import fmean
from typing import Sequence

from monailabel_app.core.overlap import box_iou
from monailabel_app.data.sample import GroundingSample
from monailabel_app.reasoning.answer_parser import parse_answer
from monailabel_app.reasoning.backends import ReasonerSpec, build_reasoner
from monailabel_app.reasoning.prompt import build_prompt
from monailabel_app.reasoning.sampling import SamplingSettings
from monailabel_app.training.abstention import training_reward
from monailabel_app.training.config import GRPOConfig
from monailabel_app.training.rollout import ground_truth_in_frame

MAX_CHECK_SAMPLES = 32  # bounds the check's time on a site with many labels
IOU_EPS = 1e-6  # the evaluation's


def greedy_scores(reasoner_path: str, samples: Sequence[GroundingSample], config: GRPOConfig) -> list[dict]:
    """{"reward", "iou"} per sample, in order; the reasoner is loaded for this call and freed after it."""
    sampling = SamplingSettings(max_new_tokens=config.max_new_tokens)  # greedy
    spec = ReasonerSpec(reasoner_path, sampling, min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    reasoner = build_reasoner("transformers", spec)
    scores, reward = [], training_reward(config)
    try:
        for sample in samples:
            prompt = build_prompt(sample.question, config.think, config.template)
            answer = reasoner.generate(sample.image, prompt)
            truth = ground_truth_in_frame(sample.ground_truth, answer.frame)
            parsed = parse_answer(answer.text, answer.frame.model_width, answer.frame.model_height)
            if sample.is_negative:
                iou = 1.0 if parsed.absent else 0.0
            else:
                iou = box_iou(list(parsed.box), truth["bbox_2d"], IOU_EPS) if parsed.ok else 0.0
            scores.append({"reward": reward(answer.text, truth)["score"], "iou": iou})
    finally:
        reasoner.close()  # training loads the same checkpoint next, on the same GPU
    return scores


def mean_greedy_reward(reasoner_path: str, samples: Sequence[GroundingSample], config: GRPOConfig) -> float:
    scores = greedy_scores(reasoner_path, samples[:MAX_CHECK_SAMPLES], config)
    return round(fmean(score["reward"] for score in scores), 4)


def greedy_box_ious(reasoner_path: str, samples: Sequence[GroundingSample], config: GRPOConfig) -> list[float]:
    return [score["iou"] for score in greedy_scores(reasoner_path, samples, config)]

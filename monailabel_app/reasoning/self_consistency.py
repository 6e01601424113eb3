"""Confidence from self-consistency: how often the reasoner, asked again with sampling, lands where its answer did.

A greedy answer carries no sign of doubt. So the same question is also answered `k` times with temperature sampling,
and the confidence is the mean box IoU of those `k` sampled answers to the greedy one, a sample with no usable box
counting 0 (so both "it points elsewhere" and "it can't say" lower it). A greedy answer with no usable box has
confidence 0. All boxes are in the one frame the model saw, so they compare directly.

Cost: the greedy answer and the samples come from **one** generate call of k+1 rows, row 0 kept greedy by
`GreedyRows` (every other row samples). The prompt and picture are expanded to the k+1 rows before prefill, so prefill
does k+1 times the work in one batched forward; decoding steps are shared by the rows and last as long as the longest
one. `benchmarks/confidence_cost.py` prints the measured ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from transformers import LogitsProcessor

from monailabel_app.core.overlap import box_iou
from monailabel_app.reasoning.answer_parser import ParsedAnswer

METRIC_IOU_EPS = 1e-6


class GreedyRows(LogitsProcessor):
    """Keeps the first row of every group of `group_size` rows greedy while the others sample: all but the row's
    highest score become -inf, so whatever the sampler's temperature, it picks the argmax (ties: the lowest token id,
    as greedy search does)."""

    def __init__(self, group_size: int) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {group_size}")
        self.group_size = group_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = torch.arange(0, scores.shape[0], self.group_size, device=scores.device)
        best = scores[rows].argmax(dim=-1)
        greedy = torch.full_like(scores[rows], -math.inf)
        greedy[torch.arange(len(rows), device=scores.device), best] = 0.0
        scores = scores.clone()
        scores[rows] = greedy
        return scores


@dataclass
class Confidence:
    value: float  # in [0, 1]: mean box IoU of the samples to the greedy answer (unusable samples count 0)
    samples: int  # sampled answers behind it
    parsed_share: float  # share of the samples with a usable box
    mean_box_iou_parsed: Optional[float]  # mean IoU over the usable samples only (None when none is)
    temperature: float

    def to_json(self) -> dict:
        return {
            "value": round(self.value, 4),
            "samples": self.samples,
            "parsed_share": round(self.parsed_share, 4),
            "mean_box_iou_parsed": None if self.mean_box_iou_parsed is None else round(self.mean_box_iou_parsed, 4),
            "temperature": self.temperature,
        }


def score_agreement(greedy: ParsedAnswer, samples: Sequence[ParsedAnswer], temperature: float) -> Confidence:
    """The confidence of `greedy` given `samples` of the same question (parsed in the same frame)."""
    if not samples:
        raise ValueError("self-consistency needs at least one sampled answer")
    usable = [sample for sample in samples if sample.ok]
    ious = [box_iou(sample.box, greedy.box, METRIC_IOU_EPS) for sample in usable] if greedy.ok else []
    return Confidence(
        value=sum(ious) / len(samples) if greedy.ok else 0.0,
        samples=len(samples),
        parsed_share=len(usable) / len(samples),
        mean_box_iou_parsed=sum(ious) / len(ious) if ious else None,
        temperature=temperature,
    )

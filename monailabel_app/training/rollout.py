"""Rollouts for GRPO: the prompt's model inputs, a group of sampled answers, and their tokens' log-probabilities.

Why this shape:
- One prompt at a time, its whole group in one `generate` call (`num_return_sequences`): groups never mix images, so
  no padding of pixel inputs, and a group's answers share one encoded prompt.
- Sampling settings are built from scratch instead of inherited from the checkpoint's generation_config (Qwen2.5-VL
  ships top_k=1, top_p=0.001 and a repetition penalty): GRPO's ratio and KL assume the answers were drawn from the
  policy's own temperature-scaled distribution, which is also what the log-probs here compute.
- Image/video placeholder tokens are never sampled (generation suppresses them and the log-probs renormalise without
  them, so both describe the same distribution): one in an answer would make the teacher-forced forward expect image
  features that don't exist.
- Log-probs come from a full forward over prompt + answer (teacher forcing), with the image's multimodal token types
  passed along so Qwen2.5-VL builds the same 3D rotary positions as during generation; only the answer positions'
  logits are materialised, and the softmax normaliser is taken one sequence at a time to bound memory.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from transformers import BatchFeature, GenerationConfig

from monailabel_app.core.frames import ImageFrame
from monailabel_app.reasoning import model_input


@dataclass
class EncodedPrompt:
    """Processor output for one image + prompt (batch of one), and the pixel frame the model sees it in."""

    features: BatchFeature  # input_ids, attention_mask, mm_token_type_ids, pixel_values, image_grid_thw
    frame: ImageFrame

    @property
    def length(self) -> int:
        return int(self.features["input_ids"].shape[1])


@dataclass
class GroupRollout:
    """One prompt's group of sampled answers and what the policy update needs about them.

    `response_mask` is True up to and including each answer's end-of-turn token. Log-probs are per answer token,
    (group, response length); `old_log_probs` is None when each rollout batch gets a single update (then the policy
    that sampled is the one being updated, and the ratio's denominator is the current log-prob, detached).
    """

    prompt: EncodedPrompt
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    texts: list[str]
    rewards: list[dict[str, float]]
    advantages: torch.Tensor
    old_log_probs: Optional[torch.Tensor] = None
    ref_log_probs: Optional[torch.Tensor] = None

    @property
    def tokens(self) -> int:
        return int(self.response_mask.sum())

    def micro_batches(self, size: int) -> Iterator[slice]:
        for start in range(0, len(self.texts), size):
            yield slice(start, start + size)


def encode_prompt(
    processor,
    image: np.ndarray,
    prompt: str,
    min_pixels: Optional[int] = None,
    max_pixels: Optional[int] = None,
) -> EncodedPrompt:
    """The prompt exactly as inference builds it (`reasoning.model_input`)."""
    return EncodedPrompt(*model_input.encode(processor, image, prompt, min_pixels, max_pixels))


def ground_truth_in_frame(ground_truth: dict, frame: ImageFrame) -> dict:
    """Original-pixel ground truth -> the frame the model answers in, which is where rewards compare; a negative's
    ("absent") has no coordinates."""
    if ground_truth.get("absent") is True:
        return dict(ground_truth)
    return {
        "bbox_2d": list(frame.box_to_model(ground_truth["bbox_2d"])),
        "point_2d": [list(frame.point_to_model(point)) for point in ground_truth["point_2d"]],
    }


def vision_token_ids(model_config) -> list[int]:
    """Qwen2.5-VL's image/video placeholder and delimiter tokens: never valid inside an answer."""
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return [getattr(model_config, name) for name in names if getattr(model_config, name, None) is not None]


def sampling_config(
    base: GenerationConfig, temperature: float, max_new_tokens: int, group_size: int, suppressed_token_ids: list[int]
) -> GenerationConfig:
    """Plain temperature sampling; only the end/pad token ids are taken from the checkpoint's own config."""
    return GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        repetition_penalty=1.0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=group_size,
        eos_token_id=base.eos_token_id,
        pad_token_id=base.pad_token_id,
        suppress_tokens=suppressed_token_ids,
    )


def end_token_ids(generation_config: GenerationConfig) -> list[int]:
    eos = generation_config.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Rollouts and reference log-probs run without dropout; the module's previous mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@torch.no_grad()
def sample_responses(
    model, prompt: EncodedPrompt, generation_config: GenerationConfig, synced_gpus: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples a group of answers; returns their token ids (group, length) and validity mask (through the end token).

    `synced_gpus` keeps every rank stepping until all are done, which ZeRO-3 needs on several GPUs (each forward
    gathers parameters collectively).
    """
    output = model.generate(**prompt.features, generation_config=generation_config, synced_gpus=synced_gpus)
    response_ids = output[:, prompt.length :]
    return response_ids, validity_mask(response_ids, end_token_ids(generation_config))


def validity_mask(response_ids: torch.Tensor, end_ids: Sequence[int]) -> torch.Tensor:
    """True through each row's first end token (it is part of the answer: stopping is a decision), False after."""
    is_end = torch.isin(response_ids, torch.tensor(list(end_ids), device=response_ids.device)).long()
    return (is_end.cumsum(dim=1) - is_end) == 0  # no end token strictly before this position


def decode_responses(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
    pairs = zip(response_ids.cpu(), response_mask.cpu())
    return [tokenizer.decode(ids[mask], skip_special_tokens=True) for ids, mask in pairs]


def response_log_probs(
    model,
    prompt: EncodedPrompt,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
    suppressed_token_ids: Sequence[int] = (),
) -> torch.Tensor:
    """log pi(token | prompt, earlier tokens) for each answer token, (answers, length) in fp32, under the sampling
    distribution: logits divided by the temperature, `suppressed_token_ids` excluded.

    Gradients flow when called with grad enabled. Positions past an answer's end are computed but meaningless; the
    mask removes them from every loss.
    """
    count, length = response_ids.shape
    features = prompt.features
    prompt_ids = features["input_ids"].expand(count, -1)
    inputs = dict(
        input_ids=torch.cat([prompt_ids, response_ids], dim=1),
        attention_mask=torch.cat([features["attention_mask"].expand(count, -1), response_mask.long()], dim=1),
        mm_token_type_ids=torch.cat(
            [features["mm_token_type_ids"].expand(count, -1), torch.zeros_like(response_ids)], dim=1
        ),
        pixel_values=features["pixel_values"].repeat(count, 1),
        image_grid_thw=features["image_grid_thw"].repeat(count, 1),
    )
    logits = model(**inputs, use_cache=False, logits_to_keep=length + 1).logits[:, :-1]
    return _token_log_probs(logits, response_ids, temperature, suppressed_token_ids)


def _token_log_probs(
    logits: torch.Tensor, token_ids: torch.Tensor, temperature: float, suppressed_token_ids: Sequence[int]
) -> torch.Tensor:
    chosen = logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1).float() / temperature
    suppressed = torch.tensor(list(suppressed_token_ids), dtype=torch.long, device=logits.device)
    normalisers = torch.stack(
        [torch.logsumexp((row.float() / temperature).index_fill(-1, suppressed, -torch.inf), dim=-1) for row in logits]
    )
    return chosen - normalisers


def stack_rewards(rollouts: Sequence[GroupRollout], key: str) -> torch.Tensor:
    """One reward term of every answer in these groups, (groups, group size)."""
    return torch.tensor([[reward[key] for reward in rollout.rewards] for rollout in rollouts], dtype=torch.float32)

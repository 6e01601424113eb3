"""GRPO's arithmetic as pure torch functions: group advantages, the PPO-clipped token loss, KL estimators.

These follow verl, the trainer the paper used (its released run script and config), so a retrained model sees the
same objective:

- Advantage = (r - group mean) / (group std + eps) with the *sample* standard deviation (Bessel's n-1), as verl's
  `torch.std` and TRL's `.std()` compute it. A group whose answers all score the same gets advantage 0 for every
  answer: no policy gradient from it, only the KL term.
- Policy loss per token = max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)); with verl's dual clip, negative
  advantages are further capped at -A * c (so a huge ratio on a bad answer can't blow up the loss). verl's default
  c = 3 was in force for the paper's run.
- KL to the frozen reference is added to the loss (not folded into the reward), per token, with the estimators of
  Schulman's "Approximating KL divergence": k1 = log(pi/ref), k2 = (log(pi/ref))^2 / 2, k3 = ref/pi - log(ref/pi) - 1
  (verl's "low_var_kl"). As in verl, the log ratio is clamped to +-20 before exp and k3 to [-10, 10].
- Aggregation is token-mean: every valid response token of the mini-batch weighs the same, whatever answer it is in.
  `token_normaliser` lets a micro-batch contribute its share of a mini-batch's token-mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

LOG_RATIO_LIMIT = 20.0  # exp(20) ~ 5e8: keeps exp finite in fp32 and bf16, and gradients free of inf * 0
K3_LIMIT = 10.0


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(num_groups, group_size) rewards -> advantages of the same shape, normalised within each group."""
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"expected rewards of shape (groups, group_size >= 2), got {tuple(rewards.shape)}")
    rewards = rewards.float()
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=True)
    return (rewards - mean) / (std + eps)


def kl_estimate(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from the sampled tokens' log-probs under both models."""
    log_ratio = (log_probs - ref_log_probs).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        ref_over_pi = -log_ratio
        return (ref_over_pi.exp() - ref_over_pi - 1).clamp(-K3_LIMIT, K3_LIMIT)
    raise ValueError(f"unknown KL estimator {estimator!r}; use k1, k2 or k3")


def clipped_policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float = 0.2,
    dual_clip_c: Optional[float] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO-clip loss and a bool mask of the tokens where clipping took the gradient away.

    `advantages` broadcasts against the (sequences, tokens) log-probs, e.g. shape (sequences, 1).
    """
    ratio = (log_probs - old_log_probs).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    loss = torch.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    if dual_clip_c is not None:
        capped = torch.minimum(loss, -advantages * dual_clip_c)
        negative = (advantages < 0).expand_as(loss)
        is_clipped = is_clipped | (negative & (loss > capped))
        loss = torch.where(negative, capped, loss)
    return loss, is_clipped


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum()


@dataclass
class GRPOLoss:
    """`loss` is what backpropagates; the rest are token-mean figures for logging (detached)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor
    clip_fraction: torch.Tensor
    tokens: int


def grpo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    ref_log_probs: Optional[torch.Tensor] = None,
    clip_eps: float = 0.2,
    dual_clip_c: Optional[float] = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    token_normaliser: Optional[float] = None,
) -> GRPOLoss:
    """Token-mean GRPO loss over the valid tokens of (sequences, tokens) log-probs.

    `advantages` has one value per sequence. Without `token_normaliser` the loss is the mean over this batch's valid
    tokens; with it, the sum is divided by it instead, so micro-batches of one mini-batch, each divided by the
    mini-batch's token count, add up to the mini-batch's token-mean.
    """
    mask = response_mask.to(log_probs.dtype)
    tokens = int(response_mask.sum())
    normaliser = float(token_normaliser if token_normaliser is not None else max(tokens, 1))
    token_loss, is_clipped = clipped_policy_loss(
        log_probs, old_log_probs, advantages.reshape(-1, 1).to(log_probs.dtype), clip_eps, dual_clip_c
    )
    policy_loss = masked_sum(token_loss, mask) / normaliser
    loss = policy_loss
    kl = torch.zeros((), device=log_probs.device)
    if ref_log_probs is not None and kl_coef > 0:
        kl = masked_sum(kl_estimate(log_probs, ref_log_probs, kl_estimator), mask) / normaliser
        loss = loss + kl_coef * kl
    clip_fraction = masked_sum(is_clipped.to(mask.dtype), mask) / normaliser
    return GRPOLoss(loss, policy_loss.detach(), kl.detach(), clip_fraction.detach(), tokens)

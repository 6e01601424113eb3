"""GRPO arithmetic checked against direct, element-by-element computations on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from monailabel_app.training.loss import clipped_policy_loss, group_advantages, grpo_loss, kl_estimate


def test_advantages_use_the_group_mean_and_sample_std():
    rewards = torch.tensor([[1.0, 2.0, 4.0, 1.0], [0.0, 0.0, 3.0, 3.0]])
    expected = []
    for group in rewards.tolist():
        mean = sum(group) / len(group)
        sample_std = math.sqrt(sum((r - mean) ** 2 for r in group) / (len(group) - 1))
        expected.append([(r - mean) / (sample_std + 1e-6) for r in group])
    torch.testing.assert_close(group_advantages(rewards), torch.tensor(expected))


def test_a_group_of_equal_rewards_has_zero_advantages():
    advantages = group_advantages(torch.tensor([[0.7, 0.7, 0.7], [1.0, 0.0, 2.0]]))
    assert torch.equal(advantages[0], torch.zeros(3))
    assert advantages[1].abs().sum() > 0


def test_advantages_need_groups_of_at_least_two():
    with pytest.raises(ValueError):
        group_advantages(torch.tensor([[1.0], [2.0]]))


def _ppo_token_loss(log_prob, old_log_prob, advantage, eps, dual_c):
    ratio = math.exp(log_prob - old_log_prob)
    loss = max(-advantage * ratio, -advantage * min(max(ratio, 1 - eps), 1 + eps))
    clipped = -advantage * min(max(ratio, 1 - eps), 1 + eps) > -advantage * ratio
    if dual_c is not None and advantage < 0:
        capped = min(loss, -advantage * dual_c)
        clipped = clipped or capped < loss
        loss = capped
    return loss, clipped


@pytest.mark.parametrize("dual_c", [None, 3.0])
def test_clipped_policy_loss_matches_the_ppo_formula(dual_c):
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(3, 5, generator=generator)
    new = old + 2.0 * torch.randn(3, 5, generator=generator)  # ratios from ~0.01 to ~100: every branch is taken
    advantages = torch.tensor([[1.5], [-0.8], [-2.0]])
    loss, clipped = clipped_policy_loss(new, old, advantages, clip_eps=0.2, dual_clip_c=dual_c)
    for i in range(3):
        for t in range(5):
            expected_loss, expected_clipped = _ppo_token_loss(
                new[i, t].item(), old[i, t].item(), advantages[i, 0].item(), 0.2, dual_c
            )
            assert loss[i, t].item() == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
            assert bool(clipped[i, t]) == expected_clipped
    if dual_c is not None:  # the dual clip caps a negative advantage's loss at -A * c
        assert (loss[1:] <= -advantages[1:] * dual_c + 1e-6).all()


def test_kl_estimators_match_their_formulas():
    log_probs = torch.tensor([-0.5, -2.0, -1.0, -3.0])
    ref_log_probs = torch.tensor([-1.5, -0.5, -1.0, -1.2])
    for index in range(4):
        d = log_probs[index].item() - ref_log_probs[index].item()  # log(pi / ref)
        assert kl_estimate(log_probs, ref_log_probs, "k1")[index].item() == pytest.approx(d)
        assert kl_estimate(log_probs, ref_log_probs, "k2")[index].item() == pytest.approx(0.5 * d * d)
        assert kl_estimate(log_probs, ref_log_probs, "k3")[index].item() == pytest.approx(
            math.exp(-d) - (-d) - 1, rel=1e-5
        )
    assert kl_estimate(log_probs, log_probs, "k3").abs().max() == 0
    assert kl_estimate(torch.tensor([-5.0]), torch.tensor([0.0]), "k3").item() == 10.0  # verl's clamp
    with pytest.raises(ValueError):
        kl_estimate(log_probs, ref_log_probs, "k4")


def test_k3_is_an_unbiased_estimate_of_the_kl_divergence():
    """Averaged over tokens sampled from pi, k3 converges to KL(pi || ref) computed exactly."""
    generator = torch.Generator().manual_seed(0)
    pi = torch.softmax(torch.randn(6, generator=generator), dim=0)
    ref = torch.softmax(torch.randn(6, generator=generator), dim=0)
    exact = float((pi * (pi.log() - ref.log())).sum())
    tokens = torch.multinomial(pi, 200_000, replacement=True, generator=generator)
    estimate = float(kl_estimate(pi.log()[tokens], ref.log()[tokens], "k3").mean())
    assert estimate == pytest.approx(exact, rel=0.03)


def test_k3_stays_finite_for_extreme_log_ratios():
    log_probs = torch.tensor([-200.0, 0.0], requires_grad=True)
    kl = kl_estimate(log_probs, torch.tensor([0.0, -200.0]), "k3")
    kl.sum().backward()
    assert torch.isfinite(kl).all() and torch.isfinite(log_probs.grad).all()


def _inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    old = -torch.rand(4, 6, generator=generator) * 3
    new = (old + 0.3 * torch.randn(4, 6, generator=generator)).requires_grad_()
    ref = old + 0.2 * torch.randn(4, 6, generator=generator)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 5 + [0], [1] + [0] * 5], dtype=torch.bool)
    advantages = torch.tensor([1.0, -0.5, 0.25, -1.5])
    return new, old, ref, mask, advantages


def test_loss_is_the_token_mean_over_valid_tokens_plus_the_kl_term():
    new, old, ref, mask, advantages = _inputs()
    result = grpo_loss(new, old, advantages, mask, ref, clip_eps=0.2, dual_clip_c=3.0, kl_coef=0.01, kl_estimator="k3")
    token_losses, kls, clipped = [], [], []
    for i in range(4):
        for t in range(6):
            if mask[i, t]:
                loss, was_clipped = _ppo_token_loss(new[i, t].item(), old[i, t].item(), advantages[i].item(), 0.2, 3.0)
                d = ref[i, t].item() - new[i, t].item()
                token_losses.append(loss)
                kls.append(math.exp(d) - d - 1)
                clipped.append(was_clipped)
    policy_loss = sum(token_losses) / len(token_losses)
    kl = sum(kls) / len(kls)
    assert result.tokens == len(token_losses) == 15
    assert result.policy_loss.item() == pytest.approx(policy_loss, rel=1e-5)
    assert result.kl.item() == pytest.approx(kl, rel=1e-5)
    assert result.loss.item() == pytest.approx(policy_loss + 0.01 * kl, rel=1e-5)
    assert result.clip_fraction.item() == pytest.approx(sum(clipped) / len(clipped))


def test_micro_batches_with_the_mini_batch_token_count_add_up_to_the_token_mean():
    new, old, ref, mask, advantages = _inputs(seed=1)
    kwargs = dict(clip_eps=0.2, dual_clip_c=3.0, kl_coef=0.05)
    whole = grpo_loss(new, old, advantages, mask, ref, **kwargs)
    (whole_gradient,) = torch.autograd.grad(whole.loss, new)
    tokens = int(mask.sum())
    parts = [
        grpo_loss(new[s], old[s], advantages[s], mask[s], ref[s], token_normaliser=tokens, **kwargs)
        for s in (slice(0, 1), slice(1, 3), slice(3, 4))
    ]
    assert sum(part.loss for part in parts).item() == pytest.approx(whole.loss.item(), rel=1e-6)
    (parts_gradient,) = torch.autograd.grad(sum(part.loss for part in parts), new)
    torch.testing.assert_close(parts_gradient, whole_gradient)


def test_a_zero_advantage_group_gives_no_policy_gradient():
    new, old, ref, mask, _ = _inputs(seed=2)
    rewards = torch.full((1, 4), 0.6)  # every answer of the group scored the same
    advantages = group_advantages(rewards)[0]
    result = grpo_loss(new, old, advantages, mask, clip_eps=0.2, dual_clip_c=3.0, kl_coef=0.0)
    (gradient,) = torch.autograd.grad(result.loss, new)
    assert torch.equal(gradient, torch.zeros_like(gradient))
    # With the KL term on, the only gradient left is the KL's.
    with_kl = grpo_loss(new, old, advantages, mask, ref, dual_clip_c=3.0, kl_coef=0.1)
    kl_only = 0.1 * (kl_estimate(new, ref, "k3") * mask).sum() / mask.sum()
    torch.testing.assert_close(torch.autograd.grad(with_kl.loss, new)[0], torch.autograd.grad(kl_only, new)[0])


def test_padding_tokens_get_no_gradient():
    new, old, ref, mask, advantages = _inputs(seed=3)
    result = grpo_loss(new, old, advantages, mask, ref, kl_coef=0.1)
    (gradient,) = torch.autograd.grad(result.loss, new)
    assert torch.equal(gradient[~mask], torch.zeros(int((~mask).sum())))
    assert (gradient[mask] != 0).any()

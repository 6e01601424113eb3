"""GRPO on a tiny Qwen2.5-VL on CPU: rollout log-probs are the sampler's, training raises a toy reward, and the
update has the properties the math promises (no signal -> no change; micro-batching changes nothing)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner
from monailabel_app.training.rollout import (
    encode_prompt,
    end_token_ids,
    response_log_probs,
    sampling_config,
    validity_mask,
    vision_token_ids,
)
from monailabel_app.training.run import train_reasoner
from tests.support.grpo_toys import answer_opens_a_tag, constant_reward, tiny_config, toy_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def tiny_model(tiny_reasoner_dir):
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_reasoner_dir).eval()
    return model, AutoProcessor.from_pretrained(tiny_reasoner_dir)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_log_probs_of_sampled_answers_are_the_samplers(tiny_model):
    """Teacher-forced log-probs equal the (temperature-scaled, suppressed) scores generation sampled from."""
    model, processor = tiny_model
    prompt = encode_prompt(processor, toy_samples(1)[0].image, "Where is the lesion?")
    suppressed = vision_token_ids(model.config)
    config = sampling_config(model.generation_config, 0.7, 12, 4, suppressed)
    config.output_scores, config.return_dict_in_generate = True, True
    torch.manual_seed(0)
    output = model.generate(**prompt.features, generation_config=config)
    response_ids = output.sequences[:, prompt.length :]
    mask = validity_mask(response_ids, end_token_ids(config))
    sampled = torch.log_softmax(torch.stack(output.scores, dim=1).float(), dim=-1)
    expected = sampled.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        computed = response_log_probs(model, prompt, response_ids, mask, 0.7, suppressed)
    torch.testing.assert_close(computed[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_padding_after_the_end_token_leaves_the_answer_log_probs_unchanged(tiny_model):
    model, processor = tiny_model
    prompt = encode_prompt(processor, toy_samples(1)[0].image, "Find the nodule.")
    end, pad = end_token_ids(model.generation_config)
    answer = torch.tensor([[11, 42, 97, 5, end]])
    padded = torch.cat([answer, torch.full((1, 4), pad)], dim=1)
    with torch.no_grad():
        alone = response_log_probs(model, prompt, answer, validity_mask(answer, [end, pad]))
        in_batch = response_log_probs(model, prompt, padded, validity_mask(padded, [end, pad]))
    torch.testing.assert_close(in_batch[:, :5], alone, atol=1e-5, rtol=1e-5)


def test_validity_mask_keeps_the_first_end_token_only():
    ids = torch.tensor([[5, 6, 9, 7, 9], [5, 6, 7, 8, 4], [9, 1, 1, 1, 1]])
    assert validity_mask(ids, [9]).int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_grpo_raises_a_toy_format_reward(tiny_reasoner_dir, tmp_path):
    """Seeded: about a third of a random tiny policy's answers open a tag at first; GRPO pushes that to most."""
    config = tiny_config(
        group_size=8, max_new_tokens=16, lr=5e-3, epochs=12, max_steps=24, save_every_steps=100, seed=1
    )
    result = train_reasoner(toy_samples(8), config, tiny_reasoner_dir, tmp_path, reward_fn=answer_opens_a_tag)
    curve = result["reward_curve"]
    assert result["status"] == "completed" and len(curve) == 24
    first, last = sum(curve[:6]) / 6, sum(curve[-6:]) / 6
    assert first < 0.5, curve
    assert last > first + 0.3 and last > 0.75, curve


def test_constant_rewards_leave_the_policy_unchanged(tiny_reasoner_dir, tmp_path):
    """Every group's answers score the same: all advantages are 0, and without the KL term nothing moves."""
    config = tiny_config(kl_coef=0.0, weight_decay=0.0, max_steps=2)
    result = train_reasoner(toy_samples(4), config, tiny_reasoner_dir, tmp_path, reward_fn=constant_reward)
    trained, original = _weights(Path(result["model_dir"])), _weights(tiny_reasoner_dir)
    assert trained.keys() == original.keys()
    for name, weight in original.items():
        assert torch.equal(trained[name], weight), name


def test_micro_batching_does_not_change_the_update(tiny_reasoner_dir, tmp_path):
    """The same rollouts give the same update whether a group goes through in one forward or one answer at a time."""
    trained = []
    for micro_batch_size in (4, 1):
        config = tiny_config(micro_batch_size=micro_batch_size, max_steps=1, lr=1e-4)
        run = tmp_path / str(micro_batch_size)
        result = train_reasoner(toy_samples(2), config, tiny_reasoner_dir, run, reward_fn=answer_opens_a_tag)
        trained.append(_weights(Path(result["model_dir"])))
    original = _weights(tiny_reasoner_dir)
    assert any(not torch.equal(trained[0][name], original[name]) for name in original)
    for name in original:
        torch.testing.assert_close(trained[1][name], trained[0][name], atol=1e-6, rtol=0)


def test_lora_trains_only_language_model_adapters_against_the_adapter_free_reference(tiny_reasoner_dir, tmp_path):
    config = tiny_config(lora=True, lora_r=4, lora_alpha=8, lr=1e-2, max_steps=2)
    result = train_reasoner(toy_samples(4), config, tiny_reasoner_dir, tmp_path, reward_fn=answer_opens_a_tag)
    with open(next((tmp_path / "logs").glob("version_*/metrics.csv"))) as metrics:
        kl = [float(row["kl"]) for row in csv.DictReader(metrics) if row.get("kl")]
    assert kl[0] == pytest.approx(0.0, abs=1e-6)  # adapters start at zero: the policy *is* the reference
    assert kl[1] > 0
    merged, original = _weights(Path(result["model_dir"])), _weights(tiny_reasoner_dir)
    targets = set(config.lora_target_modules)
    for name, weight in original.items():
        # Saved checkpoints name the language model "model.layers..." and the vision tower "visual..."
        adapted = name.startswith("model.layers.") and name.endswith(".weight") and name.split(".")[-2] in targets
        assert torch.equal(merged[name], weight) != adapted, name
    reasoner = TransformersReasoner(result["model_dir"], device="cpu", max_new_tokens=4)  # the inference path loads it
    assert reasoner.generate(toy_samples(1)[0].image, "Where is the lesion?").new_tokens >= 1

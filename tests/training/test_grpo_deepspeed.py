"""GRPO through Lightning's DeepSpeedStrategy (ZeRO-2 and ZeRO-3), run on CPU with the test-only subclass.

The first DeepSpeed run on a machine JIT-compiles DeepSpeed's shared-memory communication op with the system C++
compiler (about 1.5 minutes on 2 busy cores; cached in ~/.cache/torch_extensions afterwards).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner
from monailabel_app.training.run import train_reasoner
from tests.support.cpu_deepspeed import cpu_deepspeed_strategy
from tests.support.grpo_toys import answer_opens_a_tag, tiny_config, toy_samples

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(shutil.which("c++") is None, reason="DeepSpeed on CPU JIT-builds an op with c++"),
]


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(Path(folder) / "model.safetensors")


def test_zero2_update_equals_the_plain_update_with_one_answer_per_micro_batch(tiny_reasoner_dir, tmp_path):
    """DeepSpeed accumulates the micro-batches the module backpropagates (its managed accumulation is off) and steps
    once: one step there with micro-batches of 1 answer equals one plain step with the whole group at once."""
    plain = tiny_config(micro_batch_size=4, max_steps=1, lr=1e-4, zero_stage=2)
    zero2 = plain.replace(micro_batch_size=1)
    samples = toy_samples(2)
    expected = train_reasoner(samples, plain, tiny_reasoner_dir, tmp_path / "plain", reward_fn=answer_opens_a_tag)
    strategy, run = cpu_deepspeed_strategy(zero2), tmp_path / "zero2"
    result = train_reasoner(samples, zero2, tiny_reasoner_dir, run, reward_fn=answer_opens_a_tag, strategy=strategy)
    assert result["status"] == "completed" and result["reward_curve"] == expected["reward_curve"]
    trained, reference = _weights(result["model_dir"]), _weights(expected["model_dir"])
    original = _weights(tiny_reasoner_dir)
    assert any(not torch.equal(trained[name], original[name]) for name in original)
    for name in original:
        torch.testing.assert_close(trained[name], reference[name], atol=1e-5, rtol=0)


def test_zero2_lora_run_checkpoints_only_adapters_and_resumes(tiny_reasoner_dir, tmp_path):
    config = tiny_config(lora=True, lora_r=4, lora_alpha=8, max_steps=2, zero_stage=2)
    samples = toy_samples(4)
    first = train_reasoner(
        samples,
        config.replace(max_steps=1),
        tiny_reasoner_dir,
        tmp_path,
        reward_fn=answer_opens_a_tag,
        strategy=cpu_deepspeed_strategy(config),
    )
    checkpoint = Path(first["checkpoint"])
    assert checkpoint.is_dir() and (checkpoint / "latest").exists()  # DeepSpeed's sharded checkpoint layout
    saved = torch.load(next(checkpoint.rglob("*model_states.pt")), map_location="cpu", weights_only=False)["module"]
    assert saved and all("lora_" in name for name in saved)  # frozen weights come from the model folder
    resumed = train_reasoner(
        samples,
        config,
        tiny_reasoner_dir,
        tmp_path,
        reward_fn=answer_opens_a_tag,
        resume=True,
        strategy=cpu_deepspeed_strategy(config),
    )
    assert (resumed["steps_done"], len(resumed["reward_curve"]), resumed["resumed_from"]) == (2, 1, str(checkpoint))
    assert (
        TransformersReasoner(resumed["model_dir"], device="cpu", max_new_tokens=2)
        .generate(samples[0].image, "Where is the lesion?")
        .new_tokens
        >= 1
    )


def test_zero3_full_fine_tuning_with_a_frozen_reference(tiny_reasoner_dir, tmp_path):
    """ZeRO-3 shards the policy and its frozen reference copy; generation, KL and the export gather them."""
    config = tiny_config(max_steps=1, zero_stage=3, kl_coef=0.05)
    strategy = cpu_deepspeed_strategy(config)
    result = train_reasoner(
        toy_samples(2), config, tiny_reasoner_dir, tmp_path, reward_fn=answer_opens_a_tag, strategy=strategy
    )
    assert result["status"] == "completed" and result["steps_done"] == 1
    trained, original = _weights(result["model_dir"]), _weights(tiny_reasoner_dir)
    assert trained.keys() == original.keys()
    assert all(trained[name].shape == original[name].shape for name in original)  # gathered, not shard placeholders
    assert any(not torch.equal(trained[name], original[name]) for name in original)

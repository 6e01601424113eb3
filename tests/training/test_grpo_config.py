"""GRPO settings: the presets, their shipped files, and loading/saving."""

from __future__ import annotations

import pytest

from monailabel_app.training.config import HOSPITAL_PRESET, PAPER_PRESET, PRESET_DIR, GRPOConfig, parse_overrides
from monailabel_app.training.run import load_config


def test_paper_preset_has_the_papers_values():
    paper = PAPER_PRESET
    assert (paper.group_size, paper.prompts_per_step, paper.mini_batch_prompts) == (16, 128, 64)
    assert paper.updates_per_step == 2
    assert (paper.temperature, paper.max_new_tokens, paper.clip_eps) == (1.0, 2048, 0.2)
    assert (paper.kl_coef, paper.kl_estimator, paper.lr, paper.weight_decay) == (0.01, "k3", 1e-6, 0.01)
    assert (paper.grad_clip, paper.epochs, paper.reward_mode) == (1.0, 5, "soft")
    assert paper.gradient_checkpointing and not paper.lora


def test_hospital_preset_is_small_and_uses_lora():
    hospital = HOSPITAL_PRESET
    assert hospital.lora and hospital.devices == 1
    assert hospital.group_size <= 8 and hospital.max_steps <= 100
    assert hospital.lr > PAPER_PRESET.lr


def test_the_paper_file_is_the_dataclass_defaults():
    assert GRPOConfig.load(PRESET_DIR / "paper.yaml") == GRPOConfig()


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_and_load_round_trip(tmp_path, suffix):
    config = HOSPITAL_PRESET.replace(lr=3e-5, dual_clip_c=None, lora_target_modules=["q_proj"])
    assert GRPOConfig.load(config.save(tmp_path / f"run{suffix}")) == config


def test_a_partial_file_keeps_the_papers_values_and_reads_exponents(tmp_path):
    path = tmp_path / "partial.yaml"
    path.write_text("lr: 2e-6\nlora: true\n")  # YAML 1.1 reads 2e-6 as a string; it must still be a number
    config = GRPOConfig.load(path)
    assert config.lr == 2e-6 and config.lora and config.group_size == PAPER_PRESET.group_size


def test_unknown_keys_and_inconsistent_values_are_refused(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("grup_size: 8\n")
    with pytest.raises(ValueError, match="grup_size"):
        GRPOConfig.load(path)
    with pytest.raises(ValueError, match="mini_batch_prompts"):
        GRPOConfig(prompts_per_step=10, mini_batch_prompts=4)
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)


def test_command_line_overrides_apply_on_top_of_a_preset():
    assert parse_overrides(["lr=2e-6", "lora=true", "dual_clip_c=null"]) == {
        "lr": "2e-6",
        "lora": True,
        "dual_clip_c": None,
    }
    config = load_config("hospital", ["lr=2e-6", "max_steps=3"])
    assert config.lr == 2e-6 and config.max_steps == 3 and config.lora

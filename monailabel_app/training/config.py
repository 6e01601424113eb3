"""Every GRPO training setting in one dataclass, with the paper's run and a one-GPU hospital retraining as presets.

The defaults are the paper's values (docs/method.md §5, checked against the released verl run script), so a config
file only needs the keys it changes. Files are YAML or JSON; unknown keys are an error, because a typo that silently
falls back to a default would waste a GPU-week.

Batch vocabulary (all counts are global, over every GPU):
- a *step* samples `group_size` answers for each of `prompts_per_step` prompts (one rollout batch);
- the step's prompts are split into mini-batches of `mini_batch_prompts`, one optimiser update each, and the whole
  batch is passed over `passes_per_step` times: `updates_per_step = passes_per_step * prompts_per_step /
  mini_batch_prompts` (paper: 1 * 128 / 64 = 2);
- `micro_batch_size` sequences go through one forward/backward (memory only; it never changes the result).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from monailabel_app.core.errors import RequestError
from monailabel_app.reasoning.frame_bounds import TRAINED_FRAME_MAX_PIXELS

KL_ESTIMATORS = ("k1", "k2", "k3")
REWARD_MODES = ("soft", "hard")
PRECISIONS = ("auto", "bf16-mixed", "bf16-true", "16-mixed", "32-true")
# Qwen2.5-VL's language-model projections; LoRA is applied to these inside the language model only (see grpo_module).
QWEN_LM_LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ConfigError(RequestError):
    """A GRPO setting that can't be used; the message names every one."""


@dataclass
class GRPOConfig:
    # Rollouts
    group_size: int = 16  # answers sampled per prompt (G)
    prompts_per_step: int = 128
    mini_batch_prompts: int = 64  # prompts per optimiser update
    passes_per_step: int = 1  # PPO epochs over one rollout batch
    micro_batch_size: int = 1  # sequences per forward/backward
    temperature: float = 1.0  # pure temperature sampling (no top-p/top-k, so log-probs match the sampler)
    max_new_tokens: int = 2048
    think: bool = True  # prompt asks for <think> before <answer>
    template: Optional[str] = None  # template file with one {question}; built-in when empty
    min_pixels: Optional[int] = None  # reasoner image bounds; the checkpoint processor's own when empty
    max_pixels: Optional[int] = TRAINED_FRAME_MAX_PIXELS  # a cap: the released checkpoints' training frame (840 x 840)
    reward_mode: str = "soft"  # soft (the released model) | hard
    abstain_reward: float = 0.0  # "not in this image" on negatives (`abstention.py`); 0 = the released reward, exact
    # Loss
    clip_eps: float = 0.2
    dual_clip_c: Optional[float] = 3.0  # verl's dual clip for negative advantages; None turns it off
    kl_coef: float = 0.01  # KL to the frozen reference, in the loss; 0 = no reference at all
    kl_estimator: str = "k3"  # k1 | k2 | k3 ("low variance", the paper's)
    advantage_eps: float = 1e-6
    # Optimiser (AdamW, constant learning rate)
    lr: float = 1e-6
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping
    epochs: int = 5
    max_steps: int = -1  # GRPO steps; -1 = run all epochs
    # Model
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # >0 makes the first update's ratio differ from 1 (dropout on, rollouts without)
    lora_target_modules: list[str] = field(default_factory=lambda: list(QWEN_LM_LINEAR_LAYERS))
    gradient_checkpointing: bool = True
    precision: str = "auto"  # bf16-mixed on GPU, 32-true on CPU
    # Distribution (DeepSpeed on GPU)
    zero_stage: int = 2  # 0-3
    offload: bool = False  # optimiser state (and with ZeRO-3 the parameters) in CPU memory
    devices: int = -1  # GPUs per node; -1 = all visible (on CPU: processes, -1 = one)
    num_nodes: int = 1
    # Run
    seed: int = 0
    save_every_steps: int = 10  # GRPO steps between `last.ckpt` updates
    progress_bar: bool = True

    def __post_init__(self) -> None:
        self.validate()

    @property
    def updates_per_step(self) -> int:
        return self.passes_per_step * self.prompts_per_step // self.mini_batch_prompts

    def total_steps(self, num_samples: int) -> int:
        """GRPO steps of a run over `num_samples` prompts: all epochs, or `max_steps` if that comes first."""
        all_epochs = self.epochs * (num_samples // self.prompts_per_step)
        return min(all_epochs, self.max_steps) if self.max_steps > 0 else all_epochs

    def validate(self) -> None:
        """Raises ConfigError naming every inconsistent setting at once."""
        problems = []
        if self.group_size < 2:
            problems.append("group_size must be at least 2: a group of one has no baseline")
        if self.prompts_per_step < 1 or self.mini_batch_prompts < 1 or self.passes_per_step < 1:
            problems.append("prompts_per_step, mini_batch_prompts and passes_per_step must be positive")
        elif self.prompts_per_step % self.mini_batch_prompts:
            problems.append(
                f"prompts_per_step ({self.prompts_per_step}) must be a multiple of mini_batch_prompts "
                f"({self.mini_batch_prompts})"
            )
        if self.micro_batch_size < 1 or self.max_new_tokens < 1:
            problems.append("micro_batch_size and max_new_tokens must be positive")
        if self.temperature <= 0:
            problems.append("temperature must be > 0 (GRPO needs sampled, varied answers)")
        if self.reward_mode not in REWARD_MODES:
            problems.append(f"reward_mode must be one of {REWARD_MODES}")
        if self.abstain_reward < 0:
            problems.append("abstain_reward must be >= 0 (0 = off, the released reward)")
        elif self.abstain_reward > 0 and not self.template:
            problems.append(
                "abstain_reward > 0 needs a template that offers the 'not in this image' answer: template=abstain "
                "(the built-in one) or your own"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            problems.append(f"kl_estimator must be one of {KL_ESTIMATORS}")
        if self.kl_coef < 0 or self.clip_eps <= 0 or self.lr <= 0 or self.grad_clip < 0:
            problems.append("kl_coef and grad_clip must be >= 0; clip_eps and lr must be > 0")
        if self.dual_clip_c is not None and self.dual_clip_c <= 1:
            problems.append("dual_clip_c must be > 1 (or null to turn dual clipping off)")
        if self.epochs < 1 or self.max_steps == 0 or self.max_steps < -1:
            problems.append("epochs must be >= 1 and max_steps -1 or positive")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}")
        if self.zero_stage not in (0, 1, 2, 3):
            problems.append("zero_stage must be 0, 1, 2 or 3")
        if self.lora and (self.lora_r < 1 or not self.lora_target_modules):
            problems.append("LoRA needs lora_r >= 1 and at least one target module")
        if self.save_every_steps < 1 or self.num_nodes < 1 or self.devices == 0 or self.devices < -1:
            problems.append("save_every_steps and num_nodes must be positive; devices -1 or positive")
        if problems:
            raise ConfigError("Invalid GRPO config: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "GRPOConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "GRPOConfig":
        known = {spec.name for spec in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown GRPO config keys {unknown}; known keys: {sorted(known)}")
        defaults = cls.__dataclass_fields__
        return cls(**{name: _as_float_if_float_field(value, defaults[name].default) for name, value in values.items()})

    @classmethod
    def load(cls, path: str | Path) -> "GRPOConfig":
        """YAML (.yaml/.yml) or JSON; keys not in the file keep the paper's values."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a mapping of GRPO settings")
        return cls.from_dict(values)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return path


def _as_float_if_float_field(value: Any, default: Any) -> Any:
    """YAML reads `1e-6` (no dot) as a string; float settings accept it, and integers, as numbers."""
    if isinstance(default, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"expected a number, got {value!r}") from None
    return value


def parse_overrides(assignments: list[str]) -> dict[str, Any]:
    """`key=value` strings (values read as YAML, so `lr=2e-6`, `lora=true`, `dual_clip_c=null` work)."""
    overrides = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"expected key=value, got {assignment!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


# The presets are their files, the one source of truth: `presets/paper.yaml` (the paper's run; the dataclass defaults
# above are the same values, so a partial file keeps the paper's) and `presets/hospital.yaml` (one GPU, LoRA), which is
# also what the MONAI Label train task shows as its defaults.
PRESET_DIR = Path(__file__).parent / "presets"
PRESETS = {path.stem: GRPOConfig.load(path) for path in sorted(PRESET_DIR.glob("*.yaml"))}
PAPER_PRESET = PRESETS["paper"]
HOSPITAL_PRESET = PRESETS["hospital"]

"""GRPO for the grounding reasoner as a LightningModule (docs/method.md §4 and §5).

One training step = one rollout batch: for each prompt, sample a group of answers, score them with the reward,
normalise rewards within the group into advantages, then take `updates_per_step` optimiser updates on PPO's clipped
token loss plus a KL penalty to the frozen reference (the arithmetic is in `grpo_loss`). Optimisation is manual
(`automatic_optimization = False`) because one batch of prompts drives several optimiser updates, each accumulated
over micro-batches; Lightning still owns devices, precision, DeepSpeed, checkpoints, logging and the progress bar.

The reference policy:
- with LoRA it is the same network with the adapters switched off (`peft`'s `disable_adapter()`), so no second copy
  of the weights exists;
- without LoRA it is a frozen copy taken before training (a submodule, so DeepSpeed places and shards it too);
- with `kl_coef = 0` there is none.

Several ranks give the run one rank would: each prompt's answers are sampled from a seed of (run seed, step, sample
id), not from a rank's random stream, and each update's token-mean loss is normalised by the tokens of the whole
global mini-batch (summed over ranks), so the averaged gradients equal one rank's on the same global batch.

Checkpoints hold only the trained weights (and optimiser state); the frozen ones, the reference included, are
rebuilt from `model_path` on resume, which keeps LoRA checkpoints small.
"""

from __future__ import annotations

import copy
import hashlib
import re
import time
from contextlib import contextmanager
from functools import partial
from typing import Callable, Iterator, Mapping, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy
from torch.utils.data import DataLoader

from monailabel_app.data.sample import GroundingSample
from monailabel_app.reasoning.prompt import build_prompt
from monailabel_app.reasoning.transformers_reasoner import load_qwen_vl
from monailabel_app.training.abstention import training_reward
from monailabel_app.training.config import GRPOConfig
from monailabel_app.training.loss import group_advantages, grpo_loss
from monailabel_app.training.rollout import (
    GroupRollout,
    decode_responses,
    encode_prompt,
    eval_mode,
    ground_truth_in_frame,
    response_log_probs,
    sample_responses,
    sampling_config,
    stack_rewards,
    vision_token_ids,
)
from monailabel_app.training.sampler import PromptBatchSampler

# (answer text, ground truth in the model's frame) -> {"score": total, term: value, ...}
RewardFunction = Callable[[str, Mapping], Mapping[str, float]]
REWARD_SCORE_KEY = "score"
_LOSS_FIGURES = ("loss", "policy_loss", "kl", "clip_fraction")
CHECKPOINT_CONFIG_KEY = "grpo_config"
# What a resumed run must share with the saved one: the step -> prompts mapping and what the weights are.
RESUME_FIXED_SETTINGS = ("prompts_per_step", "mini_batch_prompts", "passes_per_step", "seed", "lora", "lora_r")


def parameter_dtype(precision: str) -> torch.dtype:
    """Weights are loaded in the precision they will run in: DeepSpeed keeps fp32 master copies for bf16/fp16."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float32


def language_model_lora_pattern(module_names: Sequence[str]) -> str:
    """A regex for peft that matches the named projections inside the language model only: Qwen2.5-VL's vision
    tower reuses names such as gate_proj, and adapting it is not what a LoRA retraining of the reasoner means."""
    names = "|".join(re.escape(name) for name in module_names)
    return rf".*language_model\..*\.({names})"


def sample_seed(run_seed: int, step: int, sample_id: str) -> int:
    """The random seed of one prompt's answers at one step: the same on any rank and in any process."""
    digest = hashlib.sha256(f"{run_seed}/{step}/{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class GRPOModule(pl.LightningModule):
    """Trains a Qwen2.5-VL reasoner on `samples` with GRPO; see the module docstring.

    `reward_fn` defaults to the paper's reward (`rewards.compute_reward` in `config.reward_mode`, with the abstention
    term when `config.abstain_reward` > 0: `abstention.training_reward`). `config.precision`
    should be resolved ("bf16-mixed", "32-true"...) by the caller; "auto" loads fp32 weights.
    """

    def __init__(
        self,
        config: GRPOConfig,
        model_path: str,
        samples: Sequence[GroundingSample],
        reward_fn: Optional[RewardFunction] = None,
        allow_download: bool = False,
    ) -> None:
        super().__init__()
        if not samples:
            raise ValueError("GRPO needs at least one training sample")
        self.config = config
        self.model_path = str(model_path)
        self.samples = samples if isinstance(samples, Sequence) else list(samples)  # a lazy sequence stays lazy
        self.reward_fn = reward_fn or training_reward(config)
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints carry only trained weights (see the module docstring)

        model, self.processor = load_qwen_vl(
            self.model_path, device="cpu", dtype=parameter_dtype(config.precision), allow_download=allow_download
        )
        model.train()  # loaded in eval mode; dropout-free, and activation checkpointing only acts in train mode
        if config.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.reference = None
        if config.kl_coef > 0 and not config.lora:
            self.reference = copy.deepcopy(model).requires_grad_(False)  # always run in eval mode (`eval_mode`)
        self.policy = self._with_lora(model) if config.lora else model
        self.suppressed_token_ids = vision_token_ids(model.config)
        self.generation_config = sampling_config(
            model.generation_config,
            config.temperature,
            config.max_new_tokens,
            config.group_size,
            self.suppressed_token_ids,
        )
        self.mini_batch_prompts_per_rank = config.mini_batch_prompts
        self.synced_generation = False
        self.last_step_figures: dict[str, float] = {}

    def _with_lora(self, model):
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=self.config.lora_r,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=self.config.lora_dropout,
            target_modules=language_model_lora_pattern(self.config.lora_target_modules),
        )
        return get_peft_model(model, lora)

    @property
    def steps_done(self) -> int:
        """GRPO steps (rollout batches) completed, resumed runs included."""
        return self.global_step // self.config.updates_per_step

    def setup(self, stage: str) -> None:
        world_size = self.trainer.world_size
        for name in ("prompts_per_step", "mini_batch_prompts"):
            count = getattr(self.config, name)
            if count % world_size:
                raise ValueError(f"{name} ({count}) must be a multiple of the GPU count ({world_size})")
        self.mini_batch_prompts_per_rank = self.config.mini_batch_prompts // world_size
        strategy = self.trainer.strategy
        self.synced_generation = isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3 and world_size > 1

    def train_dataloader(self) -> DataLoader:
        """The whole run is one Lightning epoch; the sampler walks the data epochs (see `grpo_sampler`)."""
        sampler = PromptBatchSampler(
            len(self.samples),
            self.config.prompts_per_step,
            total_steps=self.config.total_steps(len(self.samples)),
            steps_done=lambda: self.steps_done,
            seed=self.config.seed,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
        )
        return DataLoader(self.samples, batch_sampler=sampler, collate_fn=list)

    def configure_optimizers(self):
        parameters = [p for p in self.policy.parameters() if p.requires_grad]
        if self.config.offload and isinstance(self.trainer.strategy, DeepSpeedStrategy):
            from deepspeed.ops.adam import DeepSpeedCPUAdam  # ZeRO-Offload steps the optimiser on the CPU

            optimizer_class = partial(DeepSpeedCPUAdam, adamw_mode=True)
        else:
            optimizer_class = torch.optim.AdamW
        return optimizer_class(parameters, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def training_step(self, batch: list[GroundingSample], batch_idx: int) -> None:
        started = time.perf_counter()
        rollouts = [self._rollout(sample) for sample in batch]
        for rollout in rollouts:
            self._add_fixed_log_probs(rollout)
        rollout_s = time.perf_counter() - started
        loss_figures = self._update(rollouts)
        figures = self._step_figures(rollouts, loss_figures, rollout_s, time.perf_counter() - started)
        self.last_step_figures = figures
        shown = {"reward/score_mean", "kl", "response_length"}
        log = dict(on_step=True, on_epoch=False, batch_size=len(batch), sync_dist=self.trainer.world_size > 1)
        self.log_dict({k: v for k, v in figures.items() if k in shown}, prog_bar=True, **log)
        self.log_dict({k: v for k, v in figures.items() if k not in shown}, **log)

    def _rollout(self, sample: GroundingSample) -> GroupRollout:
        """Sample a group of answers for one prompt and score them against the ground truth in the model's frame."""
        prompt_text = build_prompt(sample.question, self.config.think, self.config.template)
        prompt = encode_prompt(
            self.processor, sample.image, prompt_text, self.config.min_pixels, self.config.max_pixels
        )
        prompt.features = prompt.features.to(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        with eval_mode(self.policy), torch.random.fork_rng(devices=devices):
            torch.manual_seed(sample_seed(self.config.seed, self.steps_done, sample.sample_id))
            response_ids, response_mask = sample_responses(
                self.policy, prompt, self.generation_config, self.synced_generation
            )
        texts = decode_responses(self.processor.tokenizer, response_ids, response_mask)
        ground_truth = ground_truth_in_frame(sample.ground_truth, prompt.frame)
        rewards = [dict(self.reward_fn(text, ground_truth)) for text in texts]
        scores = torch.tensor([[reward[REWARD_SCORE_KEY] for reward in rewards]], dtype=torch.float32)
        advantages = group_advantages(scores, self.config.advantage_eps)[0].to(self.device)
        return GroupRollout(prompt, response_ids, response_mask, texts, rewards, advantages)

    @torch.no_grad()
    def _add_fixed_log_probs(self, rollout: GroupRollout) -> None:
        """Log-probs that stay fixed through the step's updates: the reference's, and the sampling policy's when
        more than one update follows (with one update the policy being updated is still the sampling one)."""
        if self.config.updates_per_step > 1:
            rollout.old_log_probs = self._log_probs(self.policy, rollout)
        if self.config.kl_coef > 0:
            with self._reference_policy() as reference:
                rollout.ref_log_probs = self._log_probs(reference, rollout)

    def _log_probs(self, model, rollout: GroupRollout) -> torch.Tensor:
        with eval_mode(model):
            return torch.cat(
                [
                    response_log_probs(
                        model,
                        rollout.prompt,
                        rollout.response_ids[part],
                        rollout.response_mask[part],
                        self.config.temperature,
                        self.suppressed_token_ids,
                    )
                    for part in rollout.micro_batches(self.config.micro_batch_size)
                ]
            )

    @contextmanager
    def _reference_policy(self) -> Iterator[torch.nn.Module]:
        if self.reference is not None:
            yield self.reference
        else:
            with self.policy.disable_adapter():
                yield self.policy

    def _update(self, rollouts: list[GroupRollout]) -> dict[str, float]:
        """The step's optimiser updates; returns loss figures averaged over them (token-mean within each)."""
        optimizer = self.optimizers()
        per_update = self.mini_batch_prompts_per_rank
        totals = dict.fromkeys(_LOSS_FIGURES, 0.0)
        updates = 0
        for _ in range(self.config.passes_per_step):
            for start in range(0, len(rollouts), per_update):
                mini_batch = rollouts[start : start + per_update]
                tokens = self._tokens_per_rank(sum(rollout.tokens for rollout in mini_batch))
                optimizer.zero_grad()
                for rollout in mini_batch:
                    for part in rollout.micro_batches(self.config.micro_batch_size):
                        result = self._micro_batch_loss(rollout, part, tokens)
                        self.manual_backward(result.loss)
                        for name in _LOSS_FIGURES:
                            totals[name] += float(getattr(result, name).detach())
                if self.config.grad_clip > 0:  # a no-op under DeepSpeed, which clips in its step (see its config)
                    self.clip_gradients(optimizer, self.config.grad_clip, gradient_clip_algorithm="norm")
                optimizer.step()
                updates += 1
        return {name: total / updates for name, total in totals.items()}

    def _tokens_per_rank(self, tokens: int) -> float:
        """The global mini-batch's answer tokens over the ranks: the gradients the ranks average then equal the
        token-mean gradient of the whole global mini-batch, however its tokens fall on the ranks."""
        world_size = self.trainer.world_size
        if world_size == 1:
            return tokens
        total = self.trainer.strategy.reduce(torch.tensor(float(tokens), device=self.device), reduce_op="sum")
        return float(total) / world_size

    def _micro_batch_loss(self, rollout: GroupRollout, part: slice, mini_batch_tokens: float):
        mask = rollout.response_mask[part]
        log_probs = response_log_probs(
            self.policy,
            rollout.prompt,
            rollout.response_ids[part],
            mask,
            self.config.temperature,
            self.suppressed_token_ids,
        )
        old = rollout.old_log_probs[part] if rollout.old_log_probs is not None else log_probs.detach()
        ref = rollout.ref_log_probs[part] if rollout.ref_log_probs is not None else None
        return grpo_loss(
            log_probs,
            old,
            rollout.advantages[part],
            mask,
            ref_log_probs=ref,
            clip_eps=self.config.clip_eps,
            dual_clip_c=self.config.dual_clip_c,
            kl_coef=self.config.kl_coef,
            kl_estimator=self.config.kl_estimator,
            token_normaliser=mini_batch_tokens,
        )

    def _step_figures(
        self, rollouts: list[GroupRollout], loss_figures: dict[str, float], rollout_s: float, step_s: float
    ) -> dict[str, float]:
        figures = {}
        for key in rollouts[0].rewards[0]:
            values = stack_rewards(rollouts, key)
            figures[f"reward/{key}_mean"] = float(values.mean())
            figures[f"reward/{key}_std"] = float(values.std(unbiased=False))
        scores = stack_rewards(rollouts, REWARD_SCORE_KEY)
        lengths = torch.tensor([float(length) for rollout in rollouts for length in rollout.response_mask.sum(dim=1)])
        figures.update(loss_figures)
        figures["response_length"] = float(lengths.mean())
        figures["zero_std_groups"] = float((scores.std(dim=1) == 0).float().mean())
        figures["tokens_per_s"] = float(lengths.sum()) / max(step_s, 1e-9)  # answer tokens, end to end
        figures["rollout_s"] = rollout_s  # sampling, rewards and the fixed log-probs
        figures["step_s"] = step_s
        return figures

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trained = {name for name, parameter in self.named_parameters() if parameter.requires_grad}
        if "state_dict" in checkpoint:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}
        checkpoint[CHECKPOINT_CONFIG_KEY] = self.config.to_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A resumed run maps its step count to prompts and updates as the saved run did, so those settings stay."""
        saved, current = checkpoint.get(CHECKPOINT_CONFIG_KEY, {}), self.config.to_dict()
        changed = [name for name in RESUME_FIXED_SETTINGS if saved.get(name, current[name]) != current[name]]
        if changed:
            raise ValueError(
                f"Cannot resume with changed {changed} (checkpoint: {[saved[name] for name in changed]}); "
                "start a new run in another output folder instead."
            )

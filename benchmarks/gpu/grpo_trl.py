"""The same GRPO step in TRL's GRPOTrainer, to compare this project's step with the common library's. trl is
optional (it needs datasets too), so the row skips without it."""

from __future__ import annotations

import dataclasses
import importlib
import tempfile
import time

import torch
from PIL import Image

from benchmarks.gpu.bench import Bench, require
from benchmarks.gpu.grpo import grpo_settings, lora_config
from benchmarks.gpu.measuring import synchronize
from benchmarks.gpu.reasoner import reasoner_of
from monailabel_app.reasoning import model_input


def measure_trl_grpo(bench: Bench) -> tuple[str, str]:
    """TRL's GRPOTrainer on the same model, group size, lengths and LoRA: two steps, the second timed.

    Untested where written (trl was not installed there); keyword arguments this trl version lacks are left out."""
    require("trl", "bring its wheel: it is small")
    require("datasets", "trl needs it")
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig as TrlGRPOConfig
    from trl import GRPOTrainer

    plan = bench.plan
    reasoner_of(bench)
    settings = grpo_settings(plan)

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.started, self.seconds = 0.0, []

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize(plan)
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(plan)
            self.seconds.append(time.perf_counter() - self.started)

    def random_reward(completions, **kwargs) -> list[float]:
        return torch.rand(len(completions)).tolist()

    records = [{"prompt": model_input.user_turn(bench.prompt), "image": Image.fromarray(bench.picture)}] * 4
    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="gpu-suite-trl-") as folder:
        wanted = dict(
            output_dir=folder,
            per_device_train_batch_size=settings.micro_batch_size,
            gradient_accumulation_steps=settings.group_size // settings.micro_batch_size,
            num_generations=settings.group_size,
            max_completion_length=settings.max_new_tokens,
            max_prompt_length=None,
            generation_kwargs={"min_new_tokens": settings.max_new_tokens},
            temperature=settings.temperature,
            top_k=0,
            top_p=1.0,
            max_steps=2,
            learning_rate=settings.lr,
            beta=settings.kl_coef,
            epsilon=settings.clip_eps,
            bf16=plan.on_gpu,
            use_cpu=not plan.on_gpu,
            gradient_checkpointing=settings.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
            shuffle_dataset=False,
            dataloader_num_workers=0,
            seed=0,
        )
        known = {f.name for f in dataclasses.fields(TrlGRPOConfig)}
        trainer = GRPOTrainer(
            model=bench.model,
            reward_funcs=random_reward,
            args=TrlGRPOConfig(**{k: v for k, v in wanted.items() if k in known}),
            train_dataset=Dataset.from_list(records),
            processing_class=bench.processor,
            peft_config=lora_config(settings),
            callbacks=[clock],
        )
        try:
            trainer.train()
        finally:
            trained = trainer.model
            bench.model = trained.unload() if hasattr(trained, "unload") else trained
            bench.model.activation_checkpointing_disable()
            bench.model.eval()
            bench.reasoner.model = bench.model
            del trainer
    details = (
        f"trl {importlib.import_module('trl').__version__}: {settings.group_size} answers x "
        f"{settings.max_new_tokens} tokens, micro-batches of {settings.micro_batch_size}, the same LoRA and beta "
        f"{settings.kl_coef}; step 2 of 2 (step 1 warms up)"
    )
    return f"{clock.seconds[-1]:.2f} s per step", details

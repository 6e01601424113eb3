"""The GRPO rows: one LoRA step with this project's rollout and loss functions in the trainer's order, and why full
fine-tuning of the 7B is not run on one GPU. The training modules are imported when a row runs, so loading the suite
needs neither lightning nor peft."""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext

import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from benchmarks.gpu.bench import Bench, require
from benchmarks.gpu.measuring import in_words, parameter_count, synchronize
from benchmarks.gpu.plan import Plan
from benchmarks.gpu.reasoner import reasoner_config, reasoner_of
from monailabel_app.demo.tiny_models import build_tokenizer


def grpo_settings(plan: Plan):
    """The hospital preset (one GPU, LoRA) with the suite's group size and answer length, one prompt per step."""
    from monailabel_app.training.config import HOSPITAL_PRESET

    return dataclasses.replace(
        HOSPITAL_PRESET,
        group_size=plan.grpo_group,
        max_new_tokens=plan.grpo_tokens,
        prompts_per_step=1,
        mini_batch_prompts=1,
        micro_batch_size=plan.grpo_micro_batch,
    )


def lora_config(settings):
    from peft import LoraConfig

    from monailabel_app.training.module import language_model_lora_pattern  # imports lightning (on the GPU host)

    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=language_model_lora_pattern(settings.lora_target_modules),
    )


def grpo_step(bench: Bench, policy, optimizer, settings, new_tokens: int) -> dict[str, float]:
    """One GRPO step on one prompt, as GRPOModule.training_step runs it (rollout, reference log-probs, one update of
    micro-batches, clipping, AdamW), with the project's rollout and loss functions; rewards are random."""
    from monailabel_app.training.loss import group_advantages, grpo_loss
    from monailabel_app.training.rollout import (
        encode_prompt,
        eval_mode,
        response_log_probs,
        sample_responses,
        sampling_config,
        vision_token_ids,
    )

    plan, model = bench.plan, bench.model
    suppressed = vision_token_ids(model.config)
    generation = sampling_config(
        model.generation_config, settings.temperature, new_tokens, settings.group_size, suppressed
    )
    generation.min_new_tokens = new_tokens
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if plan.on_gpu else nullcontext()  # bf16-mixed
    clock = {}
    synchronize(plan)
    started = time.perf_counter()
    with autocast:
        prompt = encode_prompt(
            bench.processor, bench.fresh_picture(), bench.prompt, settings.min_pixels, settings.max_pixels
        )
        prompt.features = prompt.features.to(plan.device)
        with eval_mode(policy):
            response_ids, response_mask = sample_responses(policy, prompt, generation)
        rewards = torch.rand(1, settings.group_size)  # random weights: nothing parses, so the rewards are made up
        advantages = group_advantages(rewards, settings.advantage_eps)[0].to(plan.device)
        synchronize(plan)
        clock["rollout"] = time.perf_counter() - started
        parts = [
            slice(i, i + settings.micro_batch_size) for i in range(0, settings.group_size, settings.micro_batch_size)
        ]

        def log_probs(part: slice) -> torch.Tensor:
            ids, mask = response_ids[part], response_mask[part]
            return response_log_probs(policy, prompt, ids, mask, settings.temperature, suppressed)

        with torch.no_grad(), eval_mode(policy), policy.disable_adapter():  # the reference: adapters off
            reference = torch.cat([log_probs(part) for part in parts])
        synchronize(plan)
        clock["reference"] = time.perf_counter() - started - clock["rollout"]
        optimizer.zero_grad()
        tokens = int(response_mask.sum())
        for part in parts:
            current = log_probs(part)
            loss = grpo_loss(
                current,
                current.detach(),  # one update per rollout batch: the sampling policy is the one being updated
                advantages[part],
                response_mask[part],
                ref_log_probs=reference[part],
                clip_eps=settings.clip_eps,
                dual_clip_c=settings.dual_clip_c,
                kl_coef=settings.kl_coef,
                kl_estimator=settings.kl_estimator,
                token_normaliser=tokens,
            )
            loss.loss.backward()
        synchronize(plan)
    clock["forward_backward"] = time.perf_counter() - started - clock["rollout"] - clock["reference"]
    trainable = [p for p in policy.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
    optimizer.step()
    synchronize(plan)
    clock["total"] = time.perf_counter() - started
    clock["optimizer"] = clock["total"] - clock["rollout"] - clock["reference"] - clock["forward_backward"]
    return clock


def measure_grpo(bench: Bench) -> tuple[str, str]:
    """LoRA GRPO on the 7B: one short warm-up step, then one timed step of the full length."""
    require("peft")
    require("lightning", "the trainer's module, whose LoRA targets this row uses")
    from peft import get_peft_model

    plan = bench.plan
    reasoner_of(bench)
    settings = grpo_settings(plan)
    model, policy = bench.model, None
    try:
        if settings.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        policy = get_peft_model(model, lora_config(settings))
        policy.train()
        trainable = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
        grpo_step(bench, policy, optimizer, settings, new_tokens=min(8, settings.max_new_tokens))  # warm-up
        clock = grpo_step(bench, policy, optimizer, settings, new_tokens=settings.max_new_tokens)
    finally:
        bench.model = policy.unload() if policy is not None else model  # adapters out: later rows get the plain model
        bench.model.activation_checkpointing_disable()
        bench.model.eval()
        bench.reasoner.model = bench.model
    details = (
        f"rollout {clock['rollout']:.2f} s ({settings.group_size} answers x {settings.max_new_tokens} tokens sampled) "
        f"+ reference log-probs {clock['reference']:.2f} s + policy forward/backward {clock['forward_backward']:.2f} s "
        f"(micro-batches of {settings.micro_batch_size}, gradient checkpointing) + clip and AdamW "
        f"{clock['optimizer']:.3f} s; LoRA r={settings.lora_r} on the language model's projections "
        f"({in_words(sum(p.numel() for p in trainable))} trainable), kl_coef {settings.kl_coef}; the project's "
        "rollout and loss functions (training/rollout.py, training/loss.py) in the order GRPOModule.training_step "
        "calls them, without Lightning's Trainer; random rewards (random weights give no parseable answers)"
    )
    return f"{clock['total']:.2f} s per step", details


def full_finetuning_row(bench: Bench) -> tuple[str, str]:
    """Not run, with the arithmetic: the 7B's parameter count from its config (built on the meta device, no memory)."""
    tokenizer = bench.tokenizer or build_tokenizer()
    with torch.device("meta"):
        parameters = parameter_count(Qwen2_5_VLForConditionalGeneration._from_config(reasoner_config(tokenizer, False)))
    needed = 16 * parameters  # bf16 weights (2) and gradients (2), fp32 master weights (4), two fp32 Adam moments (8)
    here = ""
    if bench.plan.on_gpu:
        here = f" (this GPU: {torch.cuda.get_device_properties(0).total_memory / 1e9:.0f} GB)"
    reason = (
        f"not run: a 7B with Adam states (~{needed / 1e9:.0f} GB+ for {parameters / 1e9:.2f} B parameters at 16 bytes "
        f"each, before activations) does not fit one GPU{here} without offload"
    )
    return reason, "DeepSpeed ZeRO-Offload would move ~12 bytes a parameter to host memory; not timed here"

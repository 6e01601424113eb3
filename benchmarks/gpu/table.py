"""The markdown the suite prints and writes: a header that names the device, versions and mode, then one table row
per measurement in a fixed order (the order a reader compares, not the order the rows run in)."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import datetime, timezone

import torch
import transformers

from benchmarks.gpu.plan import Plan

ROW_PREFILL = "reasoner prefill"
ROW_DECODE = "reasoner decode"
ROW_FRAME = "2048 x 2048 picture: own bound vs trained frame"
ROW_SAM = "SAM ViT-H image encoder"
ROW_SAM2 = "SAM2.1 Hiera-T image encoder"
ROW_END_TO_END = "one question end to end"
ROW_CONCURRENT = "16 questions: batched vs one by one"
ROW_VLLM = "transformers vs vLLM"
ROW_GRPO = "GRPO step, LoRA (this project's step)"
ROW_GRPO_TRL = "GRPO step, LoRA (TRL GRPOTrainer)"
ROW_FULL_FINETUNING = "GRPO step, full fine-tuning"
TABLE_ORDER = (
    ROW_PREFILL,
    ROW_DECODE,
    ROW_FRAME,
    ROW_SAM,
    ROW_SAM2,
    ROW_END_TO_END,
    ROW_CONCURRENT,
    ROW_VLLM,
    ROW_GRPO,
    ROW_GRPO_TRL,
    ROW_FULL_FINETUNING,
)


@dataclass
class Row:
    name: str
    result: str
    details: str = ""
    seconds: float = 0.0


def one_line(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "/")


def header(plan: Plan) -> list[str]:
    if plan.on_gpu:
        device = torch.cuda.get_device_name()
        mode = "GPU: real sizes, random weights (Qwen2.5-VL-7B architecture in bf16, SAM ViT-H, SAM2.1 Hiera-T)"
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        mode = "smoke: tiny models on the CPU; it checks the code paths, its numbers mean nothing"
    return [
        f"# GPU suite, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"- device: {device}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}",
        f"- mode: {mode}",
        f"- prompt: one {plan.picture_side} x {plan.picture_side} picture and about {plan.text_tokens} text tokens "
        "(the app's prompt, cut), a tiny BPE tokenizer with Qwen's special tokens",
        "",
    ]


def table(rows: dict[str, Row]) -> list[str]:
    lines = ["| row | result | details | row s |", "| --- | --- | --- | --- |"]
    for name in TABLE_ORDER:
        row = rows[name]
        lines.append(f"| {row.name} | {row.result} | {row.details} | {row.seconds:.1f} |")
    return lines

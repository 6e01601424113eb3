"""One run: every row in its execution order, each turned into figures, `skipped: why` or `failed: error` so that a
broken row never takes the others down."""

from __future__ import annotations

import sys
import time
import traceback
from typing import Callable

import torch

from benchmarks.gpu.bench import WHEEL_NAMES, Bench, Skip
from benchmarks.gpu.grpo import full_finetuning_row, measure_grpo
from benchmarks.gpu.grpo_trl import measure_trl_grpo
from benchmarks.gpu.measuring import free_memory
from benchmarks.gpu.plan import Plan
from benchmarks.gpu.reasoner_rows import (
    measure_concurrent,
    measure_decode,
    measure_end_to_end,
    measure_large_picture,
    measure_prefill,
)
from benchmarks.gpu.segmenters import measure_sam, measure_sam2
from benchmarks.gpu.table import (
    ROW_CONCURRENT,
    ROW_DECODE,
    ROW_END_TO_END,
    ROW_FRAME,
    ROW_FULL_FINETUNING,
    ROW_GRPO,
    ROW_GRPO_TRL,
    ROW_PREFILL,
    ROW_SAM,
    ROW_SAM2,
    ROW_VLLM,
    Row,
    header,
    one_line,
    table,
)
from benchmarks.gpu.vllm_row import measure_vllm

EXECUTION_ORDER = (
    (ROW_PREFILL, measure_prefill),
    (ROW_DECODE, measure_decode),
    (ROW_FRAME, measure_large_picture),
    (ROW_SAM, measure_sam),
    (ROW_SAM2, measure_sam2),
    (ROW_END_TO_END, measure_end_to_end),
    (ROW_CONCURRENT, measure_concurrent),
    (ROW_GRPO, measure_grpo),
    (ROW_GRPO_TRL, measure_trl_grpo),
    (ROW_FULL_FINETUNING, full_finetuning_row),
    (ROW_VLLM, measure_vllm),  # last: it frees the transformers model and vLLM keeps its memory
)


def run_row(bench: Bench, name: str, measure: Callable[[Bench], tuple[str, str]]) -> Row:
    """A row's figures, or `skipped: reason`, or `failed: error` (traceback to stderr); never an exception."""
    print(f"[gpu_suite] {name} ...", file=sys.stderr, flush=True)
    if bench.plan.on_gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        result, details = measure(bench)
        if bench.plan.on_gpu:
            details += f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    except Skip as reason:
        result, details = f"skipped: {reason}", ""
    except ModuleNotFoundError as error:
        result, details = f"skipped: {WHEEL_NAMES.get(error.name, error.name)} not installed", ""
    except Exception as error:  # a broken row must not take the other rows down
        traceback.print_exc()
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        result, details = f"failed: {type(error).__name__}: {message[:300]}", "traceback on stderr"
    finally:
        free_memory()
    return Row(name, one_line(result), one_line(details), time.perf_counter() - started)


def run(plan: Plan) -> tuple[list[str], dict[str, Row]]:
    bench = Bench(plan)
    rows = {name: run_row(bench, name, measure) for name, measure in EXECUTION_ORDER}
    return header(plan) + table(rows), rows

"""How every row measures: wall time with the GPU's queue drained, medians, parameter counts, freeing memory between
rows. Shared so that all rows time the same way."""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable, Optional

import torch

from benchmarks.gpu.plan import Plan


def synchronize(plan: Plan) -> None:
    if plan.on_gpu:
        torch.cuda.synchronize()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(plan: Plan, run: Callable[[], object], repeats: int, warmups: int = 1, budget_s: Optional[float] = None):
    """Seconds of each timed call (GPU work included) after `warmups` untimed ones; fewer than `repeats` when the
    row's budget runs out, never none."""
    deadline = time.perf_counter() + (plan.row_budget_s if budget_s is None else budget_s)
    for _ in range(warmups):
        run()
    seconds = []
    while len(seconds) < repeats and (not seconds or time.perf_counter() < deadline):
        synchronize(plan)
        started = time.perf_counter()
        run()
        synchronize(plan)
        seconds.append(time.perf_counter() - started)
    return seconds


def median(values) -> float:
    return statistics.median(list(values))


def runs_note(seconds: list) -> str:
    return f"median of {len(seconds)}" if len(seconds) > 1 else "one run"


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def in_words(count: int) -> str:
    return f"{count / 1e9:.3g} B" if count >= 1e9 else f"{count / 1e6:.3g} M"

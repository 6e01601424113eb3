"""One command that measures a GPU host: the 7B reasoner, the segmenters, a question end to end, batching, GRPO.

    python3.12 benchmarks/gpu_suite.py                    # a GPU host: real sizes, random weights, < 5 minutes
    python3.12 benchmarks/gpu_suite.py --out FILE         # the table's file (benchmarks/results/gpu_suite.md)
    .venv/bin/python benchmarks/gpu_suite.py --smoke      # tiny models on the CPU: the same code paths, for CI

Why this shape:
- A bare GPU host has torch, transformers, peft and lightning but no weights, no network and no MONAI Label, so every
  model is built here at its published size with random weights, and only the app's light modules are imported (none
  of them imports monai, monailabel or itk). Speed does not depend on what the weights say; answers do, so answer
  lengths are fixed (`min_new_tokens`) and the segmenter is given a fixed box instead of a parsed one.
- The reasoner is the app's own `TransformersReasoner` around a model built in memory (`loaded=`): writing 16 GB of
  random weights to disk to load them back would time the disk, not the GPU.
- Optional packages (segment-anything, sam2, trl, vllm) are looked for, never required: a row that needs a missing
  one says `skipped: <package> not installed`, a row that breaks says `failed: ...` (its traceback goes to stderr),
  and the other rows still run.
- `--smoke` runs every row's code with tiny models on the CPU, so the tests exercise the suite and it cannot rot
  while no GPU is at hand. Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import transformers

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # run as a script from a checkout: the app is not installed on a bare host

from benchmarks.gpu.plan import GPU_PLAN, SMOKE_PLAN  # noqa: E402
from benchmarks.gpu.suite import run  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "gpu_suite.md"
EXIT_NO_GPU = 2


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the code paths (CI)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the table's file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.smoke and not torch.cuda.is_available():
        print(
            "gpu_suite: no CUDA GPU here (torch.cuda.is_available() is False). Run it on a GPU host, or pass --smoke "
            "to check its code paths with tiny models on the CPU.",
            file=sys.stderr,
        )
        return EXIT_NO_GPU
    transformers.logging.set_verbosity_error()  # generation-flag warnings would bury the table
    if args.smoke:
        torch.set_num_threads(1)  # toy-sized models gain nothing from threads; on a busy 2-core machine they cost ~4x
    started = time.perf_counter()
    lines, _ = run(SMOKE_PLAN if args.smoke else GPU_PLAN)
    lines += ["", f"Whole suite: {time.perf_counter() - started:.0f} s."]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"[gpu_suite] table written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

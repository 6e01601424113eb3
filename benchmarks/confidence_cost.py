"""What a confidence costs: the greedy answer alone against the greedy answer plus k samples in one generate call.

    .venv/bin/python benchmarks/confidence_cost.py                       # tiny format-tuned reasoner, CPU
    .venv/bin/python benchmarks/confidence_cost.py --reasoner /models/MedReasoner-Soft-7B --device cuda

Prints, per k, the median of `--repeats` runs: prefill and decode seconds, new tokens of the longest row, and the
ratio of the whole call to the greedy-only one measured in the same run. The figures choose `confidence_samples auto`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from monailabel_app.demo.sample_studies import xray_picture  # noqa: E402
from monailabel_app.demo.tiny_models import build_tiny_reasoner  # noqa: E402
from monailabel_app.reasoning.prompt import build_prompt  # noqa: E402
from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner  # noqa: E402

QUESTION = "Which structure would explain the dull percussion note over the right lower chest?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reasoner", default=None, help="a Qwen2.5-VL checkpoint folder; a tiny one is built if empty")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", default="0,2,4,8", help="k values to measure, comma-separated")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    folder = args.reasoner or build_tiny_reasoner(tempfile.mkdtemp(prefix="confidence-cost-"), format_tuned=True)
    reasoner = TransformersReasoner(folder, device=args.device, max_new_tokens=args.max_new_tokens)
    picture = np.repeat(xray_picture()[..., None], 3, axis=2)
    prompt = build_prompt(QUESTION, True)
    reasoner.generate(picture, prompt)  # warm-up
    rows, baseline = [], None
    for k in (int(v) for v in args.samples.split(",")):
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            outputs = reasoner.generate_with_samples(picture, prompt, k, args.temperature)
            runs.append(
                (
                    time.perf_counter() - started,
                    outputs[0].prefill_s,
                    outputs[0].decode_s,
                    max(o.new_tokens for o in outputs),
                )
            )
        wall = statistics.median(r[0] for r in runs)
        baseline = baseline or wall
        rows.append(
            (
                k,
                wall,
                statistics.median(r[1] for r in runs),
                statistics.median(r[2] for r in runs),
                statistics.median(r[3] for r in runs),
                wall / baseline,
            )
        )
    print(f"reasoner {folder} on {args.device}, temperature {args.temperature}, {args.repeats} runs each (medians)")
    print("| k samples | call (s) | prefill (s) | decode (s) | longest row (tokens) | x greedy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, wall, prefill, decode, tokens, ratio in rows:
        print(f"| {k} | {wall:.3f} | {prefill:.3f} | {decode:.3f} | {tokens:.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()

"""Would encoding a volume's slices ahead of the tracker, several at a time, pay on this CPU? LiteMedSAM's image
encoder on 4 slices: one by one (what propagation does) against one batch of 4, for torch fp32 and for OpenVINO in
the precision `--conf segmenter_encoder auto` picks here, and against OpenVINO's throughput mode (2 streams, 4 requests
queued at once). Measured in one process, in turns, medians of `--repeats`.

    .venv/bin/python benchmarks/encode_ahead.py [--repeats 5]

A ratio over 1 is what encoding ahead could gain at best: every slice encoded past the one where the stop rule ends a
direction (`grounding/propagation.py`) is work thrown away. Printed, and written to
benchmarks/results/encode_ahead.txt.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monailabel_app.segmentation.cpu_encoder import (  # noqa: E402
    TORCH_FP32,
    import_openvino,
    openvino_core,
    probe_input,
    resolve_encoder,
)
from monailabel_app.segmentation.factory import build_segmenter  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "encode_ahead.txt"
SLICES = 4


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # the first call creates the kernels
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    encoder = build_segmenter("litemedsam", encoder=TORCH_FP32).model.image_encoder.eval()
    slices = torch.cat([probe_input(encoder) + 0.01 * i for i in range(SLICES)])
    lines = [
        f"LiteMedSAM image encoder, {SLICES} slices of 256 px; {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads; medians of {args.repeats}"
    ]

    with torch.no_grad():
        one_by_one = median_seconds(lambda: [encoder(s[None]) for s in slices], args.repeats)
        batched = median_seconds(lambda: encoder(slices), args.repeats)
    lines.append(
        f"torch fp32: one by one {one_by_one:.3f} s, one batch {batched:.3f} s, ratio {one_by_one / batched:.2f}"
    )

    path = resolve_encoder("auto", "cpu")
    if path != TORCH_FP32:
        openvino = import_openvino()
        precision = "bf16" if path == "openvino-bf16" else "f32"
        inputs = [np.ascontiguousarray(s[None].numpy()) for s in slices]
        with torch.no_grad():  # traced per batch size: the trace fixes the batch in its reshapes
            single_model = openvino.convert_model(torch.jit.trace(encoder, slices[:1], check_trace=False))
            batch_model = openvino.convert_model(torch.jit.trace(encoder, slices, check_trace=False))
        core = openvino_core()
        latency = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        single = core.compile_model(single_model, "CPU", latency).create_infer_request()
        batch = core.compile_model(batch_model, "CPU", latency).create_infer_request()
        throughput = core.compile_model(
            single_model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "THROUGHPUT"}
        )
        queue = openvino.AsyncInferQueue(throughput, 2)

        def queued() -> None:
            for picture in inputs:
                queue.start_async({0: picture})
            queue.wait_all()

        one_by_one = median_seconds(lambda: [single.infer({0: picture}) for picture in inputs], args.repeats)
        batched = median_seconds(lambda: batch.infer({0: np.concatenate(inputs)}), args.repeats)
        streams = median_seconds(queued, args.repeats)
        lines.append(
            f"{path}: one by one {one_by_one:.3f} s, one batch {batched:.3f} s (ratio {one_by_one / batched:.2f}), "
            f"2 streams {streams:.3f} s (ratio {one_by_one / streams:.2f})"
        )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()

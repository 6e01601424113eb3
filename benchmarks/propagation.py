"""What carrying an answer through a volume costs and how well it holds: `scope volume` with the frozen segmenter,
today's path beside the new one, in one run.

    .venv/bin/python benchmarks/propagation.py                        # LiteMedSAM, CPU
    .venv/bin/python benchmarks/propagation.py --segmenter medsam2 --checkpoint /models/MedSAM2_latest.pt --device cuda

On the synthetic CT with an ellipsoid lesion (`demo.sample_studies.ellipsoid_ct`, 16 slices of 128 x 96, the lesion
on 9), the key slice prompted with the lesion's true box: seconds per propagated slice (encoder + decoder), the slices
reached against the lesion's, 3D Dice against the truth, and which rule stopped each direction. The key slice is also
timed alone.

Three paths take turns, run after run, so a busy machine slows them alike (medians):
- today: the torch fp32 encoder and no embedding kept between requests (`segmenter_encoder torch-fp32`);
- new, first request: the server's default encoder (`segmenter_encoder auto`, `cpu_encoder.py`) on a volume it has
  not seen (the embedding cache emptied before each run);
- new, asked again: a second request on the same volume, which finds its slices' embeddings in the cache
  (`embedding_cache_mb`), as when a Slicer user asks another question of the CT they have open.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from monailabel_app.demo.sample_studies import ellipsoid_ct  # noqa: E402
from monailabel_app.grounding.propagation import propagate  # noqa: E402
from monailabel_app.imaging.windowing import to_display_rgb  # noqa: E402
from monailabel_app.segmentation.factory import build_segmenter  # noqa: E402

CACHE_MB = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenter", default="litemedsam")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    volume, truth = ellipsoid_ct()
    slices, key = len(volume), 7
    rows, columns = np.nonzero(truth[key])
    box = [columns.min(), rows.min(), columns.max(), rows.max()]
    pictures = {k: to_display_rgb(volume[k], "soft_tissue") for k in range(slices)}

    def build(encoder: str, **bounds):
        return build_segmenter(
            args.segmenter,
            args.checkpoint,
            device=args.device,
            encoder=encoder,
            encoder_dir=tempfile.mkdtemp(prefix="segmenter-encoders-"),
            encoder_in_background=False,
            **bounds,
        )

    today = build("torch-fp32", cache_size=1)  # no reuse between requests: each request encodes its slices
    started = time.perf_counter()
    new = build("auto", cache_size=None, cache_mb=CACHE_MB)
    one_off = time.perf_counter() - started

    def ask(segmenter) -> tuple:
        started = time.perf_counter()
        first = segmenter.segment(pictures[key], box=box)
        key_s = time.perf_counter() - started
        carried = propagate(segmenter, pictures.__getitem__, slices, key, first.mask, first.low_res_logits)
        label = np.zeros_like(truth)
        for k, mask in carried.masks.items():
            label[k] = mask
        dice = 2.0 * np.logical_and(label, truth).sum() / (label.sum() + truth.sum())
        return key_s, carried.seconds_per_slice, carried, dice

    paths = {
        "today (torch fp32, nothing kept)": [],
        f"new, first request ({new.encoder_path})": [],
        "new, asked again": [],
    }
    names = list(paths)
    for _ in range(args.repeats):
        today.limit_cache(CACHE_MB, 1)
        paths[names[0]].append(ask(today))
        new.limit_cache(CACHE_MB)  # a volume this server has not seen
        paths[names[1]].append(ask(new))
        paths[names[2]].append(ask(new))  # the same volume again: its embeddings are kept
    lesion = np.flatnonzero(truth.reshape(slices, -1).any(axis=1))
    print(f"segmenter {args.segmenter} on {args.device}; lesion on slices {lesion.min()}..{lesion.max()}, key {key}")
    print(f"new path's one-off: {one_off:.1f} s to build the segmenter and convert its encoder (kept for next starts)")
    print(f"medians of {args.repeats} runs, the paths in turns")
    print("| path | key slice alone (s) | per propagated slice (s) | x today | reached | stopped | 3D Dice |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    base = statistics.median(run[1] for run in paths[names[0]])
    for name, runs in paths.items():
        per_slice = statistics.median(run[1] for run in runs)
        _, _, carried, dice = runs[-1]
        print(
            f"| {name} | {statistics.median(run[0] for run in runs):.3f} | {per_slice:.3f} | {base / per_slice:.2f} | "
            f"{carried.first}..{carried.last} | {carried.stopped['up']} / {carried.stopped['down']} | {dice:.3f} |"
        )


if __name__ == "__main__":
    main()

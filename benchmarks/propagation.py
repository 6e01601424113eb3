"""What carrying an answer through a volume costs and how well it holds: `scope volume` with the frozen segmenter.

    .venv/bin/python benchmarks/propagation.py                        # LiteMedSAM, CPU
    .venv/bin/python benchmarks/propagation.py --segmenter medsam2 --checkpoint /models/MedSAM2_latest.pt --device cuda

On the synthetic CT with an ellipsoid lesion (`demo.sample_studies.ellipsoid_ct`, 16 slices of 128 x 96, the lesion
on 9), the key slice prompted with the lesion's true box: seconds per propagated slice (encoder + decoder), the slices
reached against the lesion's, 3D Dice against the truth, and which rule stopped each direction. The key slice is also
timed alone, as the reference in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from monailabel_app.demo.sample_studies import ellipsoid_ct
from monailabel_app.grounding.propagation import propagate
from monailabel_app.imaging.windowing import to_display_rgb
from monailabel_app.segmentation.factory import build_segmenter


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
    runs = []
    for _ in range(args.repeats):
        segmenter = build_segmenter(args.segmenter, args.checkpoint, device=args.device, cache_size=1)  # no reuse
        pictures = {k: to_display_rgb(volume[k], "soft_tissue") for k in range(slices)}
        started = time.perf_counter()
        first = segmenter.segment(pictures[key], box=box)
        key_s = time.perf_counter() - started
        carried = propagate(segmenter, pictures.__getitem__, slices, key, first.mask, first.low_res_logits)
        label = np.zeros_like(truth)
        for k, mask in carried.masks.items():
            label[k] = mask
        dice = 2.0 * np.logical_and(label, truth).sum() / (label.sum() + truth.sum())
        runs.append((key_s, carried.seconds_per_slice, carried, dice))
    lesion = np.flatnonzero(truth.reshape(slices, -1).any(axis=1))
    print(f"segmenter {args.segmenter} on {args.device}; lesion on slices {lesion.min()}..{lesion.max()}, key {key}")
    print(f"key slice alone:        {statistics.median(r[0] for r in runs):.3f} s (median of {args.repeats})")
    print(f"per propagated slice:   {statistics.median(r[1] for r in runs):.3f} s")
    _, _, carried, dice = runs[-1]
    print(f"reached slices {carried.first}..{carried.last}, stopped {carried.stopped}, 3D Dice {dice:.3f}")


if __name__ == "__main__":
    main()

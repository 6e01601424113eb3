"""A server's first image read: the app's reader (SimpleITK, ITK's own readers) against ITK's Python wrapping (the
reader before), each in a fresh process, so the one-off costs show: seconds from the import to the first picture and
the first volume read, and the memory the process holds afterwards. Both do the same work (the format's one reader,
the pixels copied into numpy); the app's checks before a decode (`image_limits`) are the same either way and left out.

    .venv/bin/python benchmarks/image_read.py [--repeats 3]

The picture is the demo's radiograph (a 240 x 180 PNG), the volume a 512 x 512 x 200 int16 CT in gzip-compressed
NIfTI (100 MiB of voxels), both written here. Medians of `--repeats` processes, taking turns; printed and written to
benchmarks/results/image_read.txt.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monailabel_app.demo.sample_studies import write_png, xray_picture  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "image_read.txt"
READERS = {  # the same work: the format's one reader (`file_formats`), the pixels copied into numpy
    "SimpleITK (the app)": (
        "import SimpleITK as sitk\n"
        "from monailabel_app.imaging.file_formats import format_of\n"
        "def read(path):\n"
        "    return sitk.GetArrayFromImage(format_of(path).reader(path).Execute())"
    ),
    "ITK's Python wrapping (before)": (
        "import itk\n"
        "from monailabel_app.imaging.file_formats import format_of\n"
        "def read(path):\n"
        "    return itk.array_from_image(itk.imread(path, imageio=getattr(itk, format_of(path).image_io).New()))"
    ),
}
MEASURE = """
import json, os, sys, time
sys.path.insert(0, {root!r})
def held_mib():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
start_mib, started = held_mib(), time.perf_counter()
{reader}
picture = read({picture!r})
picture_s = time.perf_counter() - started
volume = read({volume!r})
volume_s = time.perf_counter() - started - picture_s
print(json.dumps({{"picture_s": picture_s, "volume_s": volume_s, "held_mib": held_mib() - start_mib}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="image-read-"))
    picture = write_png(xray_picture(), folder / "xray.png")
    voxels = np.random.default_rng(0).integers(-1000, 2000, (200, 512, 512), dtype=np.int16)
    volume = folder / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(voxels), str(volume), True)
    root = str(Path(__file__).resolve().parents[1])
    runs: dict[str, list[dict]] = {name: [] for name in READERS}
    for _ in range(args.repeats):
        for name, reader in READERS.items():
            code = MEASURE.format(root=root, reader=reader, picture=str(picture), volume=str(volume))
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    lines = [f"First reads in a fresh process, medians of {args.repeats} (s, MiB held after both reads)"]
    for name, results in runs.items():
        median = {key: statistics.median(run[key] for run in results) for key in results[0]}
        lines.append(
            f"{name}: first picture {median['picture_s']:.2f} s (import included), then a 100 MiB volume "
            f"{median['volume_s']:.2f} s; {median['held_mib']:.0f} MiB held"
        )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()

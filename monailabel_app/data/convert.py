"""`python -m monailabel_app.data.convert`: a site's own data into U-MRG's parquet format, so the evaluation and the
GRPO trainer read it exactly as they read the published data set.

    # a folder of images and masks, and a questions file (CSV or index.json) naming them
    python -m monailabel_app.data.convert --questions site/questions.csv --output site/questions.parquet
    # the final labels clinicians saved in a MONAI Label datastore, with the question saved with each
    python -m monailabel_app.data.convert --datastore /data/studies --output site/labels.parquet

The questions file has one row per question: `image` and `question` are required, plus `mask` (a 0/255 or label-map
picture or volume of the image's size), and optionally `id`, `modality`, `supercategory`, `category`, `slice` (for a
volume: the slice the question is about; without it every slice with a labelled voxel becomes a sample), `window`
and `label_value` (which label of a multi-label map is the target). Paths are relative to the questions file. See
`data/folder_samples.py` for the index.json form and `data/datastore_samples.py` for what a datastore label needs.
Rows that can't be used are skipped and counted; the command says how many and why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from monailabel_app.core.errors import RequestError
from monailabel_app.data.datastore_folder import datastore_entries
from monailabel_app.data.folder_samples import INDEX_FILE, read_index, read_questions_csv, records_samples
from monailabel_app.data.load_report import LoadReport
from monailabel_app.data.loaders import load_samples
from monailabel_app.data.umrg_parquet import write_umrg_parquet


def questions_samples(path: Path, report: LoadReport):
    """Samples of a questions file: a CSV, an index.json, or a folder holding an index.json."""
    path = Path(path)
    if path.is_dir():
        return records_samples(path, read_index(path), report)
    if path.suffix.lower() == ".csv":
        return records_samples(path.parent, read_questions_csv(path), report)
    if path.name == INDEX_FILE or path.suffix.lower() == ".json":
        return records_samples(path.parent, read_index(path.parent, path.name), report)
    raise RequestError(f"{path}: give a .csv questions file, an {INDEX_FILE}, or a folder holding one")


def convert(questions: Optional[Path], datastore: Optional[Path], output: Path) -> tuple[Path, LoadReport]:
    report = LoadReport()
    if datastore is not None:
        samples = load_samples(datastore_entries(Path(datastore)), report)
    else:
        samples = questions_samples(Path(questions), report)
    return write_umrg_parquet(samples, output), report


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m monailabel_app.data.convert",
        description="Write a site's images, masks and questions (or a MONAI Label datastore's final labels) as a "
        "U-MRG-format parquet.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--questions", help="questions file (.csv or index.json) or a folder with an index.json")
    source.add_argument("--datastore", help="MONAI Label datastore folder: its final labels and their questions")
    parser.add_argument("--output", required=True, help="the parquet file to write")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.exists():
        parser.error(f"{output} exists: choose a new file (nothing is overwritten)")
    try:
        path, report = convert(args.questions, args.datastore, output)
    except (RequestError, FileNotFoundError) as error:
        output.unlink(missing_ok=True)
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if report.loaded == 0:
        output.unlink(missing_ok=True)
        print(f"error: no usable sample ({report.summary()}); nothing written", file=sys.stderr)
        for message in report.messages:
            print(f"  skipped {message}", file=sys.stderr)
        raise SystemExit(2)
    print(f"wrote {path}: {report.summary()}", file=sys.stderr)
    for message in report.messages:
        print(f"  skipped {message}", file=sys.stderr)
    return path


if __name__ == "__main__":
    main()

"""A data set as a folder: `index.json` lists the samples, image and mask files sit beside it.

`index.json` is a list of records:
    {"id": "case-1", "image": "images/case-1.png", "mask": "masks/case-1.png", "question": "...",
     "bbox_2d": [x1, y1, x2, y2], "point_2d": [[x, y], [x, y]],
     "modality": "X-ray", "supercategory": "...", "category": "...",
     "slice": 12, "window": "lung", "label_value": 2}
`write_folder_dataset` writes samples in this layout (PNG pictures and 0/255 masks). Only "image" and "question" are
required, plus a mask or both "bbox_2d" and "point_2d". Paths are relative to the
folder (absolute paths work too). Without a given box and points the ground truth is computed from the mask. Images
may be 2D pictures or volumes; "slice", "window" and "label_value" work as in `labelled_images`.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
from PIL import Image

from monailabel_app.core.errors import RequestError
from monailabel_app.data.labelled_images import labelled_image_samples
from monailabel_app.data.load_report import INVALID_RECORD, LoadReport, SkippedSample, build_or_skip
from monailabel_app.data.metadata import categories, find_value, parse_ground_truth
from monailabel_app.data.sample import GroundingSample

INDEX_FILE = "index.json"
JSON_CELLS = ("bbox_2d", "point_2d")  # a CSV cell holding a box or points is JSON text: "[10, 20, 50, 60]"
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def read_index(folder: Path, name: str = INDEX_FILE) -> list:
    """The records of `folder/index.json`; a missing or malformed index stops the load (nothing could be read)."""
    index_path = Path(folder) / name
    try:
        records = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{index_path} does not exist: a folder data set needs an {INDEX_FILE}.") from None
    except ValueError as error:
        raise RequestError(f"{index_path} is not valid JSON: {error}") from None
    if not isinstance(records, list):
        raise RequestError(f"{index_path} must hold a JSON list of sample records, not a {type(records).__name__}.")
    return records


def read_questions_csv(path: Path) -> list[dict]:
    """The same records from a CSV file with a header row (columns as the index.json keys; empty cells are absent; a
    box or points cell is JSON text): the questions file a site keeps in a spreadsheet."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise RequestError(f"{path} is not a readable CSV file: {error}") from None
    records = [{key: value for key, value in row.items() if key and value not in (None, "")} for row in rows]
    for record in records:
        for key in JSON_CELLS:
            if key in record:
                try:
                    record[key] = json.loads(record[key])
                except ValueError:
                    pass  # left as text: the sample is skipped with the reason when it is loaded
    return records


def folder_samples(folder: Path, report: Optional[LoadReport] = None) -> Iterator[GroundingSample]:
    """Reads the index now (so a broken one fails at the call), the images lazily."""
    folder = Path(folder)
    records = read_index(folder)
    return records_samples(folder, records, report if report is not None else LoadReport())


def records_samples(folder: Path, records: list, report: LoadReport) -> Iterator[GroundingSample]:
    """Samples of index records whose relative paths are relative to `folder`."""
    for position, record in enumerate(records):
        record_id = find_value(record, "id")
        sample_id = str(position if record_id is None else record_id)
        yield from build_or_skip(report, sample_id, lambda: _record_samples(folder, sample_id, record))


def _record_samples(folder: Path, sample_id: str, record: object) -> list[GroundingSample]:
    if not isinstance(record, dict):
        raise SkippedSample(INVALID_RECORD, f"an index entry must be an object, got {type(record).__name__}")
    image = find_value(record, "image")
    if not isinstance(image, str):
        raise SkippedSample(INVALID_RECORD, "the record has no image path")
    mask = find_value(record, "mask")
    return labelled_image_samples(
        sample_id,
        str(folder / image),
        str(folder / mask) if isinstance(mask, str) else None,
        find_value(record, "question"),
        slice_index=find_value(record, "slice"),
        label_value=find_value(record, "label_value"),
        window=str(find_value(record, "window") or "auto"),
        ground_truth=parse_ground_truth(record),
        categories=categories(record),
    )


def write_folder_dataset(samples: Iterable[GroundingSample], folder: Path) -> Path:
    """Samples as PNG pictures and 0/255 masks beside an index.json (the reader computes the ground truth from the
    masks). Sample ids become file names, so they must be plain (letters, digits, `-`, `_`, `.`)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    records = []
    for sample in samples:
        if not SAFE_ID.fullmatch(sample.sample_id):
            raise ValueError(f"sample id {sample.sample_id!r} can't be a file name (letters, digits, '.', '-', '_')")
        if sample.mask is None:
            raise ValueError(f"sample {sample.sample_id!r} has no mask: the folder layout stores one per sample")
        image_path, mask_path = f"images/{sample.sample_id}.png", f"masks/{sample.sample_id}.png"
        Image.fromarray(sample.image).save(folder / image_path)
        Image.fromarray(np.asarray(sample.mask, dtype=np.uint8) * 255).save(folder / mask_path)
        records.append(
            {
                "id": sample.sample_id,
                "image": image_path,
                "mask": mask_path,
                "question": sample.question,
                "modality": sample.modality,
                "supercategory": sample.supercategory,
                "category": sample.category,
            }
        )
    (folder / INDEX_FILE).write_text(json.dumps(records, indent=1), encoding="utf-8")
    return folder

"""A data set as a folder: `index.json` lists the samples, image and mask files sit beside it.

`index.json` is a list of records:
    {"id": "case-1", "image": "images/case-1.png", "mask": "masks/case-1.png", "question": "...",
     "bbox_2d": [x1, y1, x2, y2], "point_2d": [[x, y], [x, y]],
     "modality": "X-ray", "supercategory": "...", "category": "...",
     "slice": 12, "window": "lung", "label_value": 2}
Only "image" and "question" are required, plus a mask or both "bbox_2d" and "point_2d". Paths are relative to the
folder (absolute paths work too). Without a given box and points the ground truth is computed from the mask. Images
may be 2D pictures or volumes; "slice", "window" and "label_value" work as in `labelled_images`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

from monailabel_app.core.errors import RequestError
from monailabel_app.data.labelled_images import labelled_image_samples
from monailabel_app.data.load_report import INVALID_RECORD, LoadReport, SkippedSample, build_or_skip
from monailabel_app.data.metadata import categories, find_value, parse_ground_truth
from monailabel_app.data.sample import GroundingSample

INDEX_FILE = "index.json"


def read_index(folder: Path) -> list:
    """The records of `folder/index.json`; a missing or malformed index stops the load (nothing could be read)."""
    index_path = Path(folder) / INDEX_FILE
    try:
        records = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{index_path} does not exist: a folder data set needs an {INDEX_FILE}.") from None
    except ValueError as error:
        raise RequestError(f"{index_path} is not valid JSON: {error}") from None
    if not isinstance(records, list):
        raise RequestError(f"{index_path} must hold a JSON list of sample records, not a {type(records).__name__}.")
    return records


def folder_samples(folder: Path, report: Optional[LoadReport] = None) -> Iterator[GroundingSample]:
    """Reads the index now (so a broken one fails at the call), the images lazily."""
    folder = Path(folder)
    records = read_index(folder)
    return _samples(folder, records, report if report is not None else LoadReport())


def _samples(folder: Path, records: list, report: LoadReport) -> Iterator[GroundingSample]:
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

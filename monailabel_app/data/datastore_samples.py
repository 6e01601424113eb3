"""Samples from labels saved in a MONAI Label datastore, given as plain dicts (this package never imports monailabel).

Input: the entries of `datastore.datalist()` ({"image": path, "label": path}, final labels only) and each label's info
dict (`datastore.get_label_info(label_id, "final")`), either inline as `entry["label_info"]` or in `label_infos`
keyed by the entry's label path. MONAI Label stores the `params` sent when a label is saved (and later
`PUT /datastore/label/info` updates) as that info, so the question travels there under these keys:
- "question" (required): the implicit clinical question the label answers;
- "slice" (optional): the slice the question was asked on; when it is a valid index only that slice is used, when
  absent, empty or negative every slice with labelled voxels becomes a sample (see `labelled_images`);
- "window" (optional): the display window ("auto", "lung", "40,400", ...) the picture is rendered with, as at inference;
- "label_value" (optional): which value of a multi-label map is the target (default: every non-zero voxel);
- "modality", "supercategory", "category" (optional): for per-category metrics.
A clinician's saved label is a negative where it says the target is absent (`labelled_images`, negatives): an all-zero
label saved with the question (a deliberate "no finding"), and a volume's slices well outside the labelled ones.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Mapping, Optional

from monailabel_app.data.labelled_images import labelled_image_samples
from monailabel_app.data.load_report import INVALID_RECORD, LoadReport, SkippedSample, build_or_skip
from monailabel_app.data.metadata import categories, find_value
from monailabel_app.data.sample import GroundingSample

QUESTION_KEY = "question"
FINAL_TAG = "final"  # MONAI Label's DefaultLabelTag.FINAL: the labels users submitted


def final_label_entries(datastore) -> list[dict]:
    """Every image with a final label in a MONAI Label datastore (any object with its Datastore methods), with that
    label's info, where the question was recorded: the input `datastore_samples` takes."""
    entries = []
    for image_id in datastore.get_labeled_images():
        label_id = datastore.get_label_by_image_id(image_id, FINAL_TAG)
        if label_id:
            entries.append(
                {
                    "image": datastore.get_image_uri(image_id),
                    "label": datastore.get_label_uri(label_id, FINAL_TAG),
                    "label_info": datastore.get_label_info(label_id, FINAL_TAG),
                }
            )
    return entries


def datastore_samples(
    datalist: Iterable[Mapping],
    label_infos: Optional[Mapping[str, Mapping]] = None,
    report: Optional[LoadReport] = None,
    default_window: str = "auto",
) -> Iterator[GroundingSample]:
    report = report if report is not None else LoadReport()
    for entry in datalist:
        label_path = str(entry.get("label") or "")
        sample_id = _label_id(label_path) or str(entry.get("image") or "?")
        yield from build_or_skip(
            report, sample_id, lambda: _entry_samples(entry, sample_id, label_path, label_infos or {}, default_window)
        )


def _entry_samples(
    entry: Mapping, sample_id: str, label_path: str, label_infos: Mapping[str, Mapping], default_window: str
) -> list[GroundingSample]:
    image_path = entry.get("image")
    if not image_path or not label_path:
        raise SkippedSample(INVALID_RECORD, "a datalist entry needs both 'image' and 'label' paths")
    info = entry.get("label_info") or label_infos.get(label_path) or {}
    return labelled_image_samples(
        sample_id,
        str(image_path),
        label_path,
        find_value(info, QUESTION_KEY),
        slice_index=find_value(info, "slice"),
        label_value=find_value(info, "label_value"),
        window=str(find_value(info, "window") or default_window),
        categories=categories(info),
        extra={"label_info": dict(info)},
        negatives=True,
    )


def _label_id(label_path: str) -> str:
    """The datastore's label id is the label file name without its extension (".nii.gz" counts as one)."""
    name = os.path.basename(label_path)
    for extension in (".nii.gz", ".seg.nrrd"):
        if name.lower().endswith(extension):
            return name[: -len(extension)]
    return os.path.splitext(name)[0]

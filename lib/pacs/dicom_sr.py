"""The answer behind a saved label as a DICOM Structured Report (Comprehensive SR, written with highdicom), stored in
the PACS beside the DICOM SEG, so the archive keeps why the model drew what it drew, not only the mask.

The report references the SEG (a composite item) and the key slice of the source series (an image item), and lists
both with the whole source series as its evidence. Its text items, under one container "MedReasoner answer":
question, status, reasoning, raw answer, box and key points (JSON, pixels of the key slice), window, slice, the
algorithm's name and version (the reasoner's folder or id, its version and weights digest), the time it answered, its
confidence when measured, and the answer's id in the server's answer log. Concept names are the DICOM codes where one
fits (Algorithm Name 111001, Algorithm Version 111003) and this app's own coding scheme (`99MEDREASONER`) otherwise.

Every text from the request or the answer is fitted to its VR (`dicom_text.py`): a TEXT item's TextValue is UT (no
control characters but TAB, LF, FF, CR; at most 2^32-2 bytes), the Manufacturer is LO (64 bytes); an item left empty
is left out (an empty TextValue is invalid). The report declares `ISO_IR 192` (UTF-8).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset

from lib.pacs.dicom_text import fit_text

SCHEME = "99MEDREASONER"
REPORT_TITLE = hd.sr.CodedConcept("ANSWER", SCHEME, "MedReasoner answer")
ALGORITHM_NAME = hd.sr.CodedConcept("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = hd.sr.CodedConcept("111003", "DCM", "Algorithm Version")
TEXT_ITEMS = (  # record key, code value, meaning
    ("question", "QUESTION", "Question"),
    ("status", "STATUS", "Grounding status"),
    ("reasoning", "REASONING", "Reasoning"),
    ("raw_text", "RAW_ANSWER", "Raw answer"),
    ("box", "BOX", "Bounding box (pixels of the key slice)"),
    ("points", "KEY_POINTS", "Key points (pixels of the key slice)"),
    ("window", "WINDOW", "Display window"),
    ("slice", "SLICE", "Key slice index"),
    ("confidence", "CONFIDENCE", "Self-consistency confidence"),
    ("answered_at", "ANSWERED_AT", "Answered at (UTC)"),
    ("answer_id", "ANSWER_ID", "Answer log id"),
)
SEGMENTATION = hd.sr.CodedConcept("SEGMENTATION", SCHEME, "Segmentation drawn from the answer")
KEY_SLICE = hd.sr.CodedConcept("KEY_SLICE", SCHEME, "Key slice the question was answered on")
REPORT_SERIES_NUMBER = 301


def reasoning_report(
    seg_file: str, series_dir: str, record: Mapping[str, Any], app_name: str, slice_index: Optional[int] = None
) -> Dataset:
    """The Comprehensive SR of `record` (an answer record, `grounding/records.py`) for the SEG in `seg_file`, whose
    source series is the DICOM folder `series_dir`."""
    seg = pydicom.dcmread(seg_file, stop_before_pixels=True)
    sources = [pydicom.dcmread(str(path), stop_before_pixels=True) for path in sorted(Path(series_dir).iterdir())]
    if not sources:
        raise ValueError(f"no DICOM files in {series_dir}")
    items: List[hd.sr.ContentItem] = []
    for key, code, meaning in TEXT_ITEMS:
        value = record.get(key)
        if value is None or value == "":
            continue
        text = fit_text(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), "UT")
        if text:
            items.append(_text(hd.sr.CodedConcept(code, SCHEME, meaning), text))
    items.append(_text(ALGORITHM_NAME, fit_text(record.get("reasoner") or "", "UT") or "unknown"))
    items.append(_text(ALGORITHM_VERSION, fit_text(_version_text(record.get("reasoner_version")), "UT") or "unknown"))
    items.append(
        hd.sr.CompositeContentItem(
            SEGMENTATION, seg.SOPClassUID, seg.SOPInstanceUID, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
    )
    key = key_instance(sources, slice_index if slice_index is not None else record.get("slice"))
    if key is not None:
        items.append(
            hd.sr.ImageContentItem(
                KEY_SLICE, key.SOPClassUID, key.SOPInstanceUID, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
            )
        )
    root = hd.sr.ContainerContentItem(REPORT_TITLE)
    root.ContentSequence = hd.sr.ContentSequence(items)
    report = hd.sr.ComprehensiveSR(
        evidence=[*sources, seg],
        content=root,
        series_instance_uid=hd.UID(),
        series_number=REPORT_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=fit_text(app_name, "LO") or "MedReasoner",
        is_complete=True,
    )
    report.SpecificCharacterSet = "ISO_IR 192"  # questions and reasoning need not be ASCII
    report.SeriesDescription = "MedReasoner answer (reasoning)"
    return report


def report_texts(report: Dataset) -> dict[str, str]:
    """Meaning -> text of the report's text items (what a reader of the archive gets back)."""
    texts = {}
    for item in report.ContentSequence:
        if item.ValueType == "TEXT":
            texts[str(item.ConceptNameCodeSequence[0].CodeMeaning)] = str(item.TextValue)
    return texts


def key_instance(sources: Sequence[Dataset], slice_index: Any) -> Optional[Dataset]:
    """The source instance at index `slice_index` of the volume MONAI Label made of the series (ITK orders slices by
    position along the slice normal); the only instance for a radiograph; None when the slice isn't known."""
    if len(sources) == 1:
        return sources[0]
    if isinstance(slice_index, bool) or not isinstance(slice_index, int):
        return None
    ordered = volume_order(sources)
    return ordered[slice_index] if 0 <= slice_index < len(ordered) else None


def volume_order(sources: Sequence[Dataset]) -> List[Dataset]:
    """The instances in the order of the volume's slices (by position along the slice normal, as ITK stacks them)."""
    return sorted(sources, key=_position_along_normal)


def _position_along_normal(ds: Dataset) -> float:
    orientation = ds.get("ImageOrientationPatient")
    position = ds.get("ImagePositionPatient")
    if orientation is None or position is None:
        return float(ds.get("InstanceNumber") or 0)
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    return float(np.dot(np.cross(row, column), np.asarray(position, float)))


def _version_text(version: Any) -> str:
    if not isinstance(version, Mapping):
        return "unknown"
    parts = [f"{key} {version[key]}" for key in ("version", "source", "sha256") if version.get(key)]
    return ", ".join(parts) or "unknown"


def _text(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name, value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)

"""The PACS archive format of versions up to commit 3ab249c, frozen: a saved label's DICOM SEG (series 300) and the
private Comprehensive SR of its answer (series 301, coding scheme 99MEDREASONER), written exactly as those versions
wrote them. Kept so a test proves that a fresh machine still reads back, as training labels, what hospitals already
archived with them, whatever writes the SEG and SR today.

What it writes (as `git show 3ab249c:lib/pacs/dicom_seg.py` and `dicom_sr.py` did):
- a label with voxels: dcmqi's `itkimage2segimage` with the metadata JSON below (ASCII placeholders for the segment
  labels; a radiograph's 2D label as a one-slice volume, its picture given the pixel grid as its plane), then pydicom:
  `ISO_IR 192`, SeriesDescription "MedReasoner <model>", ImageComments = the provenance as JSON (question, model,
  slice, window, reasoning, answer id, ..., "app"), the segment names, ContentDescription = the question,
  SegmentDescription = "Q: <question>\\nA: <reasoning>";
- an all-zero label ("no finding"): highdicom's Segmentation with one "No finding" segment and every frame empty
  (dcmqi refuses an empty label), then the same pydicom pass;
- the SR: highdicom's ComprehensiveSR, a container "MedReasoner answer" of TEXT items (99MEDREASONER codes, DCM
  111001/111003 for the algorithm), a composite item for the SEG and an image item for the key slice.

Copied, not imported: the lead may remove or change any of it in lib/pacs/. Only `dcmqi_tool` (which finds dcmqi's
console script) comes from there. The text rules (lib/pacs/dicom_text.py at 3ab249c) are copied too, so that the
frozen objects never follow a later change of them. Don't "tidy" this module towards the current writer: its worth
is that it doesn't change.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import highdicom
import numpy as np
import pydicom
import pydicom.uid
import SimpleITK
from pydicom.dataset import Dataset

from lib.pacs.dicom_seg import dcmqi_tool

SEG_SERIES_NUMBER = 300
REPORT_SERIES_NUMBER = 301
APP_NAME = "MedReasoner for MONAI Label"
NO_FINDING = "No finding"
TYPE_CODE = {"CodeValue": "85756007", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Tissue"}
CATEGORY_CODE = {"CodeValue": "91723000", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Anatomical Structure"}
SEGMENT_COLOURS = [(255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (200, 64, 255)]
DCMQI_TIMEOUT_S = 300

SCHEME = "99MEDREASONER"
REPORT_TITLE = highdicom.sr.CodedConcept("ANSWER", SCHEME, "MedReasoner answer")
ALGORITHM_NAME = highdicom.sr.CodedConcept("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = highdicom.sr.CodedConcept("111003", "DCM", "Algorithm Version")
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
SEGMENTATION = highdicom.sr.CodedConcept("SEGMENTATION", SCHEME, "Segmentation drawn from the answer")
KEY_SLICE = highdicom.sr.CodedConcept("KEY_SLICE", SCHEME, "Key slice the question was answered on")


def write_earlier_archive(
    label_file: str, series_dir: str, provenance: Mapping[str, Any], segment_names: Mapping[int, str], folder: str
) -> tuple[str, str]:
    """The SEG and the SR a save of the earlier versions stored in the PACS for `label_file` (on the grid of the
    series in `series_dir`), as files in `folder`: (seg file, report file)."""
    os.makedirs(folder, exist_ok=True)
    seg_file = write_earlier_seg(label_file, series_dir, provenance, segment_names, os.path.join(folder, "seg.dcm"))
    report = earlier_report(seg_file, series_dir, provenance, str(provenance.get("app") or "MedReasoner"))
    report_file = os.path.join(folder, "report.dcm")
    report.save_as(report_file, write_like_original=False)  # as the earlier datastore saved it
    return seg_file, report_file


# --- the SEG (3ab249c: lib/pacs/dicom_seg.py label_to_seg) -----------------------------------------------------------


def write_earlier_seg(
    label_file: str, series_dir: str, provenance: Mapping[str, Any], segment_names: Mapping[int, str], output: str
) -> str:
    label = SimpleITK.ReadImage(label_file)
    values = [int(v) for v in np.unique(SimpleITK.GetArrayViewFromImage(label)) if v > 0]
    question = str(provenance.get("question") or "")
    model = str(provenance.get("model") or "implicit_query")
    if not values:
        _no_finding_seg(series_dir, model, str(provenance.get("app") or APP_NAME), output)
        _record_provenance(output, provenance, question, str(provenance.get("reasoning") or NO_FINDING), {})
        return output
    labels = {_placeholder(value): _segment_label(value, segment_names) for value in values}
    metadata = {  # ASCII only: dcmqi refuses other text; the names replace the placeholders afterwards
        "ContentCreatorName": "MedReasoner^",
        "SeriesDescription": "MedReasoner",
        "SeriesNumber": str(SEG_SERIES_NUMBER),
        "InstanceNumber": "1",
        "ContentLabel": "IMPLICIT_QUERY",
        "BodyPartExamined": "",
        "segmentAttributes": [[_segment(value) for value in values]],
    }
    with tempfile.TemporaryDirectory(prefix="earlier-seg-") as work:
        metadata_file = os.path.join(work, "metadata.json")
        Path(metadata_file).write_text(json.dumps(metadata))
        if label.GetDimension() == 2:  # a radiograph's label: dcmqi pairs it with the image as a one-slice volume
            label_file = os.path.join(work, "label.nrrd")
            SimpleITK.WriteImage(SimpleITK.JoinSeries(label), label_file, True)
            series_dir = _with_pixel_plane(series_dir, os.path.join(work, "source"))
        command = [
            dcmqi_tool("itkimage2segimage"),
            "--inputImageList",
            label_file,
            "--inputDICOMDirectory",
            series_dir,
            "--outputDICOM",
            output,
            "--inputMetadata",
            metadata_file,
        ]
        run = subprocess.run(command, capture_output=True, text=True, timeout=DCMQI_TIMEOUT_S)
        if run.returncode != 0 or not os.path.isfile(output) or not os.path.getsize(output):
            tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-5:])
            raise RuntimeError(f"itkimage2segimage could not write the DICOM SEG (exit {run.returncode}): {tail}")
    _record_provenance(output, provenance, question, str(provenance.get("reasoning") or ""), labels)
    return output


def _no_finding_seg(series_dir: str, model: str, app: str, output: str) -> None:
    with tempfile.TemporaryDirectory(prefix="earlier-seg-") as work:
        planes_dir = _with_pixel_plane(series_dir, os.path.join(work, "source"))
        sources = [pydicom.dcmread(str(path)) for path in sorted(Path(planes_dir).iterdir())]
    first = sources[0]
    multi_frame = len(sources) == 1 and int(first.get("NumberOfFrames") or 1) > 1
    frames = int(first.NumberOfFrames) if multi_frame else len(sources)
    if not multi_frame:
        for source in sources:
            source.SliceThickness = source.get("SliceThickness") or 1.0
    segment = highdicom.seg.SegmentDescription(
        segment_number=1,
        segment_label=NO_FINDING,
        segmented_property_category=highdicom.sr.CodedConcept(
            CATEGORY_CODE["CodeValue"], CATEGORY_CODE["CodingSchemeDesignator"], CATEGORY_CODE["CodeMeaning"]
        ),
        segmented_property_type=highdicom.sr.CodedConcept(
            TYPE_CODE["CodeValue"], TYPE_CODE["CodingSchemeDesignator"], TYPE_CODE["CodeMeaning"]
        ),
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=highdicom.AlgorithmIdentificationSequence(
            name=_algorithm_name(model),
            family=highdicom.sr.CodedConcept("123109", "DCM", "Manual Processing"),
            version=fit_text(app, "LO") or APP_NAME,
        ),
    )
    seg = highdicom.seg.Segmentation(
        source_images=sources,
        pixel_array=np.zeros((frames, first.Rows, first.Columns), np.uint8),
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=highdicom.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer="MedReasoner",
        manufacturer_model_name=_algorithm_name(model),
        software_versions=fit_text(app, "LO") or APP_NAME,
        device_serial_number="none",
        series_description=_algorithm_name(model),
        content_label="IMPLICIT_QUERY",
        content_creator_name="MedReasoner^",
        omit_empty_frames=False,
    )
    seg.SpecificCharacterSet = "ISO_IR 192"
    seg.save_as(output)


def _with_pixel_plane(series_dir: str, work_dir: str) -> str:
    files = sorted(Path(series_dir).iterdir())
    source = pydicom.dcmread(str(files[0]))
    if len(files) != 1 or "ImagePositionPatient" in source or "PerFrameFunctionalGroupsSequence" in source:
        return series_dir
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing") or [1.0, 1.0]
    source.PixelSpacing = [float(v) for v in spacing]
    source.ImagePositionPatient = [0.0, 0.0, 0.0]
    source.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    source.FrameOfReferenceUID = source.get("FrameOfReferenceUID") or pydicom.uid.generate_uid()
    source.PositionReferenceIndicator = ""
    os.makedirs(work_dir)
    source.save_as(os.path.join(work_dir, files[0].name))
    return work_dir


def _segment(value: int) -> Dict[str, Any]:
    return {
        "labelID": value,
        "SegmentLabel": _placeholder(value),
        "SegmentAlgorithmType": "SEMIAUTOMATIC",
        "SegmentAlgorithmName": "MedReasoner",
        "SegmentedPropertyCategoryCodeSequence": CATEGORY_CODE,
        "SegmentedPropertyTypeCodeSequence": TYPE_CODE,
        "recommendedDisplayRGBValue": list(SEGMENT_COLOURS[(value - 1) % len(SEGMENT_COLOURS)]),
    }


def _placeholder(value: int) -> str:
    return f"label {value}"


def _segment_label(value: int, segment_names: Mapping[int, str]) -> str:
    return fit_text(segment_names.get(value, "target" if value == 1 else f"label {value}"), "LO") or "target"


def _algorithm_name(model: str) -> str:
    return fit_text(f"MedReasoner {model}", "LO")


def _record_provenance(
    seg_file: str, provenance: Mapping[str, Any], question: str, reasoning: str, labels: Mapping[str, str]
) -> None:
    seg = pydicom.dcmread(seg_file)
    seg.SpecificCharacterSet = "ISO_IR 192"
    algorithm = _algorithm_name(str(provenance.get("model") or "implicit_query"))
    seg.SeriesDescription = algorithm
    seg.ImageComments = _fitting_json(dict(provenance), MAX_BYTES["LT"])
    for segment in seg.SegmentSequence:
        segment.SegmentLabel = labels.get(str(segment.SegmentLabel), str(segment.SegmentLabel))
        if "SegmentAlgorithmName" in segment:
            segment.SegmentAlgorithmName = algorithm
    question, reasoning = clean_text(question, "ST"), clean_text(reasoning, "ST")
    if question:
        seg.ContentDescription = fit_text(question, "LO")
        description = f"Q: {question}\nA: {reasoning}" if reasoning else question
        for segment in seg.SegmentSequence:
            segment.SegmentDescription = fit_text(description, "ST")
    seg.save_as(seg_file)


def _fitting_json(provenance: Dict[str, Any], limit: int) -> str:
    provenance = clean_strings(provenance, "LT")
    text = json.dumps(provenance, ensure_ascii=False)
    if utf8_size(text) > limit:
        provenance.pop("raw_text", None)
        text = json.dumps(provenance, ensure_ascii=False)
    reasoning = provenance.get("reasoning")
    if utf8_size(text) > limit and isinstance(reasoning, str):
        provenance["reasoning"] = shorten(reasoning, max(utf8_size(reasoning) - (utf8_size(text) - limit) - 16, 16))
        text = json.dumps(provenance, ensure_ascii=False)
    while utf8_size(text) > limit:
        key = max(provenance, key=lambda k: utf8_size(json.dumps(provenance[k], ensure_ascii=False)))
        value = provenance[key]
        room = utf8_size(value) - (utf8_size(text) - limit) - 16 if isinstance(value, str) else 0
        if room >= 16:
            provenance[key] = shorten(value, room)
        else:
            del provenance[key]
        text = json.dumps(provenance, ensure_ascii=False)
    return text


# --- the SR (3ab249c: lib/pacs/dicom_sr.py reasoning_report) ---------------------------------------------------------


def earlier_report(
    seg_file: str, series_dir: str, record: Mapping[str, Any], app_name: str, slice_index: Optional[int] = None
) -> Dataset:
    seg = pydicom.dcmread(seg_file, stop_before_pixels=True)
    sources = [pydicom.dcmread(str(path), stop_before_pixels=True) for path in sorted(Path(series_dir).iterdir())]
    items: List[highdicom.sr.ContentItem] = []
    for key, code, meaning in TEXT_ITEMS:
        value = record.get(key)
        if value is None or value == "":
            continue
        text = fit_text(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), "UT")
        if text:
            items.append(_text(highdicom.sr.CodedConcept(code, SCHEME, meaning), text))
    items.append(_text(ALGORITHM_NAME, fit_text(record.get("reasoner") or "", "UT") or "unknown"))
    items.append(_text(ALGORITHM_VERSION, fit_text(_version_text(record.get("reasoner_version")), "UT") or "unknown"))
    contains = highdicom.sr.RelationshipTypeValues.CONTAINS
    items.append(
        highdicom.sr.CompositeContentItem(SEGMENTATION, seg.SOPClassUID, seg.SOPInstanceUID, relationship_type=contains)
    )
    key = _key_instance(sources, slice_index if slice_index is not None else record.get("slice"))
    if key is not None:
        items.append(
            highdicom.sr.ImageContentItem(KEY_SLICE, key.SOPClassUID, key.SOPInstanceUID, relationship_type=contains)
        )
    root = highdicom.sr.ContainerContentItem(REPORT_TITLE)
    root.ContentSequence = highdicom.sr.ContentSequence(items)
    report = highdicom.sr.ComprehensiveSR(
        evidence=[*sources, seg],
        content=root,
        series_instance_uid=highdicom.UID(),
        series_number=REPORT_SERIES_NUMBER,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer=fit_text(app_name, "LO") or "MedReasoner",
        is_complete=True,
    )
    report.SpecificCharacterSet = "ISO_IR 192"
    report.SeriesDescription = "MedReasoner answer (reasoning)"
    return report


def _key_instance(sources: Sequence[Dataset], slice_index: Any) -> Optional[Dataset]:
    if len(sources) == 1:
        return sources[0]
    if isinstance(slice_index, bool) or not isinstance(slice_index, int):
        return None
    ordered = sorted(sources, key=_position_along_normal)
    return ordered[slice_index] if 0 <= slice_index < len(ordered) else None


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


def _text(name: highdicom.sr.CodedConcept, value: str) -> highdicom.sr.TextContentItem:
    return highdicom.sr.TextContentItem(name, value, relationship_type=highdicom.sr.RelationshipTypeValues.CONTAINS)


# --- the text rules (3ab249c: lib/pacs/dicom_text.py) ----------------------------------------------------------------

ELLIPSIS = "…"
MAX_BYTES = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10_240, "UT": 2**32 - 2, "UC": 2**32 - 2}
TEXT_VRS = frozenset({"ST", "LT", "UT"})
_REMOVED = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS_IN_TEXT = re.compile(r"[\v\x85\u2028\u2029]")
_BREAKS_IN_ONE_LINE = re.compile("[\t\n\v\f\r\x85\u2028\u2029]")


def clean_text(text: Any, vr: str) -> str:
    value = _REMOVED.sub("", str(text))
    if vr in TEXT_VRS:
        return _LINE_BREAKS_IN_TEXT.sub("\n", value).replace("\t", " ").rstrip(" ")
    return _BREAKS_IN_ONE_LINE.sub(" ", value).replace("\\", "/").strip(" ")


def fit_text(text: Any, vr: str) -> str:
    value = clean_text(text, vr)
    return value if utf8_size(value) <= MAX_BYTES[vr] else clean_text(shorten(value, MAX_BYTES[vr]), vr)


def shorten(text: str, limit: int) -> str:
    if len(text) * 4 <= limit or utf8_size(text) <= limit:
        return text
    room = max(limit - utf8_size(ELLIPSIS), 0)
    return text.encode("utf-8")[:room].decode("utf-8", errors="ignore") + ELLIPSIS


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def clean_strings(value: Any, vr: str) -> Any:
    if isinstance(value, str):
        return clean_text(value, vr)
    if isinstance(value, dict):
        return {clean_text(key, vr): clean_strings(item, vr) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_strings(item, vr) for item in value]
    return value

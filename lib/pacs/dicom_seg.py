"""A saved label as a DICOM SEG for the PACS (dcmqi's `itkimage2segimage`), with the question recorded in it, and a
SEG from the PACS back as a label on its image's grid.

Where the question goes (so it travels with the SEG to any PACS, viewer or later training run):
- `ImageComments` (0020,4000, LT, up to 10,240 characters): the provenance as JSON, e.g.
  `{"question": "...", "model": "implicit_query", "slice": 6, "window": "soft_tissue", "app": "MedReasoner ..."}`;
  this is what `read_provenance` reads back.
- each segment's `SegmentDescription` (0062,0006, ST, 1,024): the question and the model's reasoning
  ("Q: ... A: ..."), shortened to fit, so a viewer's segment details show why the mask is there; the SEG's
  `ContentDescription` (0070,0081, LO, 64): the question, shortened.
- the whole answer (reasoning, raw answer, box, points, model version, time) also goes into a DICOM SR stored beside
  the SEG (`dicom_sr.py`).
- `SeriesDescription` names the app and model; `SegmentAlgorithmType` is SEMIAUTOMATIC (a model proposed, a person
  corrected and saved).

An all-zero label is a clinician's deliberate "no finding" for the question: it is stored as a SEG with one segment
labelled "No finding" whose frames are all empty, so the PACS keeps the negative and a later training run on another
machine reads it back as one. dcmqi refuses an empty label (its issue 490), so highdicom writes that SEG.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import highdicom
import numpy as np
import pydicom
import pydicom.uid
import pydicom_seg
import SimpleITK

from monailabel_app.data.metadata import find_value

PROVENANCE_KEYS = (
    "question",
    "model",
    "slice",
    "window",
    "think",
    "reasoner",
    "reasoner_version",
    "confidence",
    "status",
    "reasoning",
    "raw_text",
    "box",
    "points",
    "answered_at",
    "answer_id",
)
APP_NAME = "MedReasoner for MONAI Label"
DCMQI_TIMEOUT_S = 300
IMAGE_COMMENTS_CHARS = 10_240  # LT's limit
TYPE_CODE = {"CodeValue": "85756007", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Tissue"}
CATEGORY_CODE = {"CodeValue": "91723000", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Anatomical Structure"}
NO_FINDING = "No finding"
SEGMENT_COLOURS = [(255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (200, 64, 255)]


class SegConversionError(RuntimeError):
    """dcmqi could not write the SEG; the message carries the end of its output."""


def provenance_of(label_info: Mapping[str, Any], app_version: str) -> Dict[str, Any]:
    """The question and how it was answered, from the save request's params (top level or under `params`)."""
    nested = label_info.get("params") if isinstance(label_info.get("params"), Mapping) else {}
    provenance = {}
    for key in PROVENANCE_KEYS:
        value = find_value(label_info, key)
        value = value if value is not None else find_value(nested, key)
        if value is not None:
            provenance[key] = value
    provenance["app"] = f"{APP_NAME} {app_version}"
    return provenance


def dcmqi_tool(name: str) -> str:
    """dcmqi's tools are console scripts of the PyPI package: on PATH, or next to this Python when the venv isn't
    activated (the `monailabel` launcher doesn't activate it)."""
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if not found:
        raise SegConversionError(f"dcmqi's {name} is not installed: pip install dcmqi (see requirements.txt)")
    return found


def label_to_seg(
    label_file: str, series_dir: str, provenance: Mapping[str, Any], segment_names: Mapping[int, str]
) -> str:
    """Writes a DICOM SEG for `label_file` (on the series' grid) referencing the series in `series_dir`."""
    label = SimpleITK.ReadImage(label_file)
    values = [int(v) for v in np.unique(SimpleITK.GetArrayViewFromImage(label)) if v > 0]
    question = str(provenance.get("question") or "")
    model = str(provenance.get("model") or "implicit_query")
    if not values:
        try:
            output = _no_finding_seg(series_dir, model, str(provenance.get("app") or APP_NAME))
        except Exception as error:  # highdicom and pydicom raise many kinds for series they can't pair with a SEG
            raise SegConversionError(f"highdicom could not write the 'No finding' SEG: {error}") from error
        return _with_provenance(output, provenance, question, str(provenance.get("reasoning") or NO_FINDING))
    metadata = {
        "ContentCreatorName": "MedReasoner",
        "SeriesDescription": f"MedReasoner {model}"[:64],
        "SeriesNumber": "300",
        "InstanceNumber": "1",
        "ContentLabel": "IMPLICIT_QUERY",
        "BodyPartExamined": "",
        "segmentAttributes": [[_segment(value, segment_names, model) for value in values]],
    }
    with tempfile.TemporaryDirectory(prefix="seg-") as work:
        metadata_file = os.path.join(work, "metadata.json")
        Path(metadata_file).write_text(json.dumps(metadata))
        if label.GetDimension() == 2:  # a radiograph's label: dcmqi pairs it with the image as a one-slice volume
            label_file = os.path.join(work, "label.nrrd")
            SimpleITK.WriteImage(SimpleITK.JoinSeries(label), label_file, True)
            series_dir = _with_pixel_plane(series_dir, os.path.join(work, "source"))
        written = os.path.join(work, "seg.dcm")  # removed with the folder unless it is whole
        command = [
            dcmqi_tool("itkimage2segimage"),
            "--inputImageList",
            label_file,
            "--inputDICOMDirectory",
            series_dir,
            "--outputDICOM",
            written,
            "--inputMetadata",
            metadata_file,
        ]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=DCMQI_TIMEOUT_S)
        except subprocess.TimeoutExpired as error:
            raise SegConversionError(f"itkimage2segimage took more than {DCMQI_TIMEOUT_S} s") from error
        except OSError as error:
            raise SegConversionError(f"itkimage2segimage could not be run: {error}") from error
        if run.returncode != 0 or not os.path.isfile(written) or not os.path.getsize(written):
            tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-5:])
            raise SegConversionError(f"itkimage2segimage could not write the DICOM SEG (exit {run.returncode}): {tail}")
        output = _kept(written)
    return _with_provenance(output, provenance, question, str(provenance.get("reasoning") or ""))


def _with_provenance(output: str, provenance: Mapping[str, Any], question: str, reasoning: str) -> str:
    """The SEG with its provenance written in; one that can't take it is removed, not left in the temp folder."""
    try:
        _record_provenance(output, provenance, question, reasoning)
    except BaseException:
        os.unlink(output)
        raise
    return output


def _no_finding_seg(series_dir: str, model: str, app: str) -> str:
    """A SEG of one "No finding" segment whose frames (one per source image, or per frame of one multi-frame image)
    are all empty."""
    with tempfile.TemporaryDirectory(prefix="seg-") as work:
        planes_dir = _with_pixel_plane(series_dir, os.path.join(work, "source"))
        sources = [pydicom.dcmread(str(path)) for path in sorted(Path(planes_dir).iterdir())]
    first = sources[0]
    multi_frame = len(sources) == 1 and int(first.get("NumberOfFrames") or 1) > 1  # enhanced CT/MR: one file
    frames = int(first.NumberOfFrames) if multi_frame else len(sources)
    if not multi_frame:  # a multi-frame image keeps its thickness in its functional groups
        for source in sources:  # a radiograph has none; highdicom and pydicom-seg (the reader) need one
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
            name=f"MedReasoner {model}"[:64],
            family=highdicom.sr.CodedConcept("123109", "DCM", "Manual Processing"),
            version=app[:64],  # AlgorithmVersion is LO
        ),
    )
    seg = highdicom.seg.Segmentation(
        source_images=sources,
        pixel_array=np.zeros((frames, first.Rows, first.Columns), np.uint8),
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=highdicom.UID(),
        series_number=300,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer="MedReasoner",
        manufacturer_model_name=f"MedReasoner {model}"[:64],
        software_versions=app[:64],
        device_serial_number="none",
        series_description=f"MedReasoner {model}"[:64],
        content_label="IMPLICIT_QUERY",
        content_creator_name="MedReasoner^",
        omit_empty_frames=False,  # the empty frames are the finding
    )
    with tempfile.TemporaryDirectory(prefix="seg-") as work:
        seg.save_as(os.path.join(work, "seg.dcm"))
        return _kept(os.path.join(work, "seg.dcm"))


def _kept(written: str) -> str:
    """A finished SEG moved out of its work folder (removed with it) to a temp file of its own: a SEG is written
    where a failure leaves nothing, and only a whole one is handed on."""
    output = tempfile.NamedTemporaryFile(suffix=".dcm", delete=False).name
    os.chmod(written, 0o600)  # it names the patient: the server's user alone reads it until it is in the PACS
    shutil.move(written, output)
    return output


def _with_pixel_plane(series_dir: str, work_dir: str) -> str:
    """dcmqi needs each source image's plane (position, orientation, frame of reference); a projection radiograph
    (DX, CR) has none. dcmqi gets a copy whose plane is the pixel grid; the SEG still references the original
    instance (same SOP Instance UID)."""
    files = sorted(Path(series_dir).iterdir())
    source = pydicom.dcmread(str(files[0]))
    if len(files) != 1 or "ImagePositionPatient" in source or "PerFrameFunctionalGroupsSequence" in source:
        return series_dir  # a multi-frame image keeps its planes in its functional groups
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing") or [1.0, 1.0]
    source.PixelSpacing = [float(v) for v in spacing]
    source.ImagePositionPatient = [0.0, 0.0, 0.0]
    source.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    source.FrameOfReferenceUID = source.get("FrameOfReferenceUID") or pydicom.uid.generate_uid()
    source.PositionReferenceIndicator = ""
    os.makedirs(work_dir)
    source.save_as(os.path.join(work_dir, files[0].name))
    return work_dir


def _segment(value: int, segment_names: Mapping[int, str], model: str) -> Dict[str, Any]:
    return {
        "labelID": value,
        "SegmentLabel": _plain(segment_names.get(value, "target" if value == 1 else f"label {value}"))[:64] or "target",
        "SegmentAlgorithmType": "SEMIAUTOMATIC",
        "SegmentAlgorithmName": f"MedReasoner {model}"[:64],
        "SegmentedPropertyCategoryCodeSequence": CATEGORY_CODE,
        "SegmentedPropertyTypeCodeSequence": TYPE_CODE,
        "recommendedDisplayRGBValue": list(SEGMENT_COLOURS[(value - 1) % len(SEGMENT_COLOURS)]),
    }


def _record_provenance(seg_file: str, provenance: Mapping[str, Any], question: str, reasoning: str) -> None:
    """Done with pydicom after dcmqi: dcmqi's metadata has no ImageComments, and the question may not be ASCII."""
    seg = pydicom.dcmread(seg_file)
    seg.SpecificCharacterSet = "ISO_IR 192"
    seg.ImageComments = _fitting_json(dict(provenance), IMAGE_COMMENTS_CHARS)
    if question:
        seg.ContentDescription = _shorten(_plain(question), 64)
        description = f"Q: {question}\nA: {reasoning}" if reasoning else question
        for segment in seg.SegmentSequence:
            segment.SegmentDescription = _shorten(description, 1024)
    seg.save_as(seg_file)


def _fitting_json(provenance: Dict[str, Any], limit: int) -> str:
    """The provenance as JSON within `limit` characters: the raw answer goes first, then the reasoning is shortened
    (the SR beside the SEG keeps both whole)."""
    text = json.dumps(provenance, ensure_ascii=False)
    if len(text) > limit and "raw_text" in provenance:
        provenance = {k: v for k, v in provenance.items() if k != "raw_text"}
        text = json.dumps(provenance, ensure_ascii=False)
    if len(text) > limit and provenance.get("reasoning"):
        spare = len(str(provenance["reasoning"])) - (len(text) - limit) - 16
        provenance = {**provenance, "reasoning": _shorten(str(provenance["reasoning"]), max(spare, 1))}
        text = json.dumps(provenance, ensure_ascii=False)
    return text


def _plain(text: str) -> str:
    """Text for a DICOM string: a backslash separates values there, control characters are not allowed."""
    return "".join(c for c in str(text).replace("\\", "/") if c.isprintable()).strip()


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_provenance(seg_file: str) -> Dict[str, Any]:
    """The JSON that `label_to_seg` wrote into ImageComments; {} for SEGs from other tools."""
    comments = pydicom.dcmread(seg_file, stop_before_pixels=True).get("ImageComments")
    try:
        provenance = json.loads(str(comments)) if comments else {}
    except ValueError:
        return {}
    return provenance if isinstance(provenance, dict) else {}


def seg_to_label(seg_file: str, reference_image: str, output_file: Optional[str] = None) -> str:
    """The SEG as a label map on the reference image's grid (SEGs usually leave out empty slices)."""
    segmentation = pydicom_seg.MultiClassReader().read(pydicom.dcmread(seg_file)).image
    reference = SimpleITK.ReadImage(reference_image)
    picture = reference.GetDimension() == 2  # a radiograph: its SEG is a one-slice volume
    grid = SimpleITK.JoinSeries(reference) if picture else reference
    label = SimpleITK.Resample(
        segmentation, grid, SimpleITK.Transform(), SimpleITK.sitkNearestNeighbor, 0, SimpleITK.sitkUInt8
    )
    label = label[:, :, 0] if picture else label
    output_file = output_file or tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
    SimpleITK.WriteImage(label, output_file, True)
    return output_file


def segment_names(label_info: Mapping[str, Any]) -> Dict[int, str]:
    """Label value -> name from the clients' `label_info` list ([{"name": ..., "idx": ...}], Slicer and OHIF)."""
    entries: List[Any] = label_info.get("label_info") or []
    names = {}
    for position, entry in enumerate(entries if isinstance(entries, list) else []):
        if isinstance(entry, Mapping) and entry.get("name"):
            names[int(entry.get("idx") or entry.get("label") or position + 1)] = str(entry["name"])
    return names

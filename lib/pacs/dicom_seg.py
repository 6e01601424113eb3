"""A saved label as a DICOM SEG for the PACS (dcmqi's `itkimage2segimage`), with the question recorded in it, and a
SEG from the PACS back as a label on its image's grid.

Where the question goes (so it travels with the SEG to any PACS, viewer or later training run):
- `ImageComments` (0020,4000, LT, up to 10,240 bytes): the provenance as JSON, e.g.
  `{"question": "...", "model": "implicit_query", "slice": 6, "window": "soft_tissue", "app": "MedReasoner ..."}`;
  this is what `read_provenance` reads back.
- each segment's `SegmentDescription` (0062,0006, ST, 1,024 bytes): the question and the model's reasoning
  ("Q: ... A: ..."), shortened to fit, so a viewer's segment details show why the mask is there; the SEG's
  `ContentDescription` (0070,0081, LO, 64 bytes): the question, shortened.
- the whole answer (reasoning, raw answer, box, points, model version, time) also goes into a DICOM SR stored beside
  the SEG (`dicom_sr.py`).
- `SeriesDescription` names the app and model; `SegmentAlgorithmType` is SEMIAUTOMATIC (a model proposed, a person
  corrected and saved).
- every text from the request or the answer is made to fit its VR first (`dicom_text.py`: no control characters,
  cut to the limit in UTF-8 bytes) and the SEG declares `ISO_IR 192`. dcmqi refuses a non-ASCII or multi-valued
  segment label or algorithm name ("Invalid character", "Value Multiplicity violated"), so it is given ASCII
  placeholders and the names are written afterwards with pydicom.

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

from lib.pacs.dicom_text import MAX_BYTES, clean_strings, clean_text, fit_text, shorten, utf8_size
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
    "refined_by_clicks",  # the clicks that corrected the mask: label info and SEG record them, as without a PACS
)
APP_NAME = "MedReasoner for MONAI Label"
DCMQI_TIMEOUT_S = 300
IMAGE_COMMENTS_BYTES = MAX_BYTES["LT"]
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
        return _with_provenance(output, provenance, question, str(provenance.get("reasoning") or NO_FINDING), {})
    labels = {_placeholder(value): _segment_label(value, segment_names) for value in values}
    metadata = {  # ASCII only: dcmqi refuses other text; the names replace the placeholders afterwards
        "ContentCreatorName": "MedReasoner^",  # PN: family name and an empty given name
        "SeriesDescription": "MedReasoner",
        "SeriesNumber": "300",
        "InstanceNumber": "1",
        "ContentLabel": "IMPLICIT_QUERY",
        "BodyPartExamined": "",
        "segmentAttributes": [[_segment(value) for value in values]],
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
    return _with_provenance(output, provenance, question, str(provenance.get("reasoning") or ""), labels)


def _with_provenance(
    output: str, provenance: Mapping[str, Any], question: str, reasoning: str, labels: Mapping[str, str]
) -> str:
    """The SEG with its provenance written in; one that can't take it is removed, not left in the temp folder."""
    try:
        _record_provenance(output, provenance, question, reasoning, labels)
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
            name=_algorithm_name(model),
            family=highdicom.sr.CodedConcept("123109", "DCM", "Manual Processing"),
            version=fit_text(app, "LO") or APP_NAME,  # AlgorithmVersion is LO
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
        manufacturer_model_name=_algorithm_name(model),
        software_versions=fit_text(app, "LO") or APP_NAME,
        device_serial_number="none",
        series_description=_algorithm_name(model),
        content_label="IMPLICIT_QUERY",
        content_creator_name="MedReasoner^",
        omit_empty_frames=False,  # the empty frames are the finding
    )
    seg.SpecificCharacterSet = "ISO_IR 192"  # else pydicom writes the model's name in Latin-1, "?" for the rest
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
    """Done with pydicom after dcmqi or highdicom: ImageComments, the question, and the names dcmqi got as ASCII
    placeholders (`labels`: placeholder -> segment label), each fitted to its VR, under `ISO_IR 192`."""
    seg = pydicom.dcmread(seg_file)
    seg.SpecificCharacterSet = "ISO_IR 192"
    algorithm = _algorithm_name(str(provenance.get("model") or "implicit_query"))
    seg.SeriesDescription = algorithm
    seg.ImageComments = _fitting_json(dict(provenance), IMAGE_COMMENTS_BYTES)
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
    """The provenance as JSON (its strings cleaned for LT) within `limit` bytes of UTF-8: the raw answer goes first,
    then the reasoning is shortened, then whatever else is longest (the SR beside the SEG keeps the answer whole)."""
    provenance = clean_strings(provenance, "LT")
    text = json.dumps(provenance, ensure_ascii=False)
    if utf8_size(text) > limit:
        provenance.pop("raw_text", None)
        text = json.dumps(provenance, ensure_ascii=False)
    reasoning = provenance.get("reasoning")
    if utf8_size(text) > limit and isinstance(reasoning, str):
        provenance["reasoning"] = shorten(reasoning, max(utf8_size(reasoning) - (utf8_size(text) - limit) - 16, 16))
        text = json.dumps(provenance, ensure_ascii=False)
    while utf8_size(text) > limit:  # a huge question, or box, points, version from the request
        key = max(provenance, key=lambda k: utf8_size(json.dumps(provenance[k], ensure_ascii=False)))
        value = provenance[key]
        room = utf8_size(value) - (utf8_size(text) - limit) - 16 if isinstance(value, str) else 0
        if room >= 16:  # each pass takes off more than the excess
            provenance[key] = shorten(value, room)
        else:
            del provenance[key]
        text = json.dumps(provenance, ensure_ascii=False)
    return text


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

"""A saved label as a DICOM SEG for the PACS (written by highdicom), with the question and the answer recorded in it,
and a SEG from the PACS back as a label on its image's grid.

Each label value present is one segment, numbered 1, 2, ... in value order; its codes name what was found
(`finding_codes.py`: the segment's property category and type from the answer's words, a generic finding code
otherwise), its algorithm is the reasoner (family Artificial Intelligence, its name and version; AUTOMATIC, or
SEMIAUTOMATIC when the clinician's clicks refined the mask), and the answer's segment carries the tracking identifier
the report shares (`tracking.py`). Every source image has its frame, empty or not, so the SEG covers the series'
grid and reads back voxel for voxel.

Where the question goes (so it travels with the SEG to any PACS, viewer or later training run):
- `ImageComments` (0020,4000, LT, up to 10,240 bytes): the provenance as JSON, e.g.
  `{"question": "...", "model": "implicit_query", "slice": 6, "window": "soft_tissue", "app": "MedReasoner ..."}`;
  this is what `read_provenance` reads back;
- each segment's `SegmentDescription` (0062,0006, ST, 1,024 bytes): the question and the model's reasoning
  ("Q: ... A: ..."), shortened to fit, so a viewer's segment details show why the mask is there; the SEG's
  `ContentDescription` (0070,0081, LO, 64 bytes): the question, shortened;
- the whole answer also goes into the TID 1500 report stored beside the SEG (`measurement_report.py`).
Every text from the request or the answer is made to fit its VR first (`dicom_text.py`) and the SEG declares
`ISO_IR 192` (UTF-8).

An all-zero label is a clinician's deliberate "no finding" for the question: one segment labelled "No finding" whose
frames are all empty, so the PACS keeps the negative and a later training run on another machine reads it back as one.
SEGs written by earlier versions (dcmqi's for positives) read back the same way.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence

import highdicom
import numpy as np
import pydicom
import pydicom.uid
import pydicom_seg
import SimpleITK
from PIL import Image, ImageCms
from pydicom.dataset import Dataset

from lib.pacs.dicom_text import MAX_BYTES, clean_strings, clean_text, fit_text, shorten, utf8_size
from lib.pacs.finding_codes import answer_finding, finding_of
from lib.pacs.source_series import read_sources, volume_order
from lib.pacs.tracking import Tracking
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
IMAGE_COMMENTS_BYTES = MAX_BYTES["LT"]
NO_FINDING = "No finding"
SEG_SERIES_NUMBER = 300
LABEL_VALUES_KEY = "label_values"  # ImageComments JSON: the saved label's value of each segment, if not 1, 2, ...
ALGORITHM_FAMILY = highdicom.sr.CodedConcept("123110", "DCM", "Artificial Intelligence")
SEGMENT_COLOURS = ((255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (200, 64, 255))  # sRGB, in turn


class SegConversionError(RuntimeError):
    """The SEG could not be written for this label and series; the message says why."""


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
    """dcmqi's tools (the readers 3D Slicer's QuantitativeReporting runs) are console scripts of the PyPI package: on
    PATH, or next to this Python when the venv isn't activated."""
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if not found:
        raise SegConversionError(f"dcmqi's {name} is not installed: pip install dcmqi (see requirements.txt)")
    return found


def label_to_seg(
    label_file: str,
    series_dir: str,
    provenance: Mapping[str, Any],
    segment_names: Mapping[int, str],
    tracking: Optional[Tracking] = None,
) -> str:
    """Writes a DICOM SEG for `label_file` (on the series' grid) referencing the series in `series_dir`; returns a
    temp file only the server's user reads, removed by the caller."""
    try:
        sources, frames = _frames_on_sources(label_file, series_dir)
        seg = _segmentation(sources, frames, provenance, segment_names, tracking)
    except SegConversionError:
        raise
    except Exception as error:  # highdicom and pydicom raise many kinds for series they can't pair with a SEG
        raise SegConversionError(f"highdicom could not write the DICOM SEG: {type(error).__name__}: {error}") from error
    output = tempfile.NamedTemporaryFile(suffix=".dcm", delete=False).name
    os.chmod(output, 0o600)  # it names the patient: the server's user alone reads it until it is in the PACS
    try:
        seg.save_as(output)
    except BaseException:
        os.unlink(output)
        raise
    return output


def _frames_on_sources(label_file: str, series_dir: str) -> tuple[List[Dataset], np.ndarray]:
    """The source images in the order of their frames, and the label as (frames, rows, columns) on them: resampled
    by physical position onto the grid the series' headers define (so the SEG is right whatever way the volume's
    file was stacked), or taken as it is for one image (a radiograph, or one multi-frame image)."""
    sources = volume_order([_with_pixel_plane(source) for source in read_sources(series_dir)])
    label = SimpleITK.ReadImage(label_file)
    if len(sources) == 1:
        array = SimpleITK.GetArrayFromImage(label)
        frames = array[None] if array.ndim == 2 else array
    else:
        grid = _grid_of(sources)
        label = SimpleITK.Resample(label, grid, SimpleITK.Transform(), SimpleITK.sitkNearestNeighbor, 0)
        frames = SimpleITK.GetArrayFromImage(label)
    first = sources[0]
    expected = (int(first.get("NumberOfFrames") or len(sources)), int(first.Rows), int(first.Columns))
    if frames.shape != expected:
        raise SegConversionError(f"the label's size {frames.shape[::-1]} differs from the series' {expected[::-1]}")
    return sources, frames


def _grid_of(sources: Sequence[Dataset]) -> SimpleITK.Image:
    """The volume grid of single-frame images in volume order, as ITK builds it from their headers."""
    first = sources[0]
    row, column = (
        np.asarray(first.ImageOrientationPatient[:3], float),
        np.asarray(first.ImageOrientationPatient[3:], float),
    )
    normal = np.cross(row, column)
    positions = [np.asarray(ds.ImagePositionPatient, float) for ds in sources]
    step = float(np.dot(positions[1] - positions[0], normal)) or 1.0
    grid = SimpleITK.Image([int(first.Columns), int(first.Rows), len(sources)], SimpleITK.sitkUInt8)
    grid.SetOrigin(tuple(positions[0]))
    grid.SetSpacing((float(first.PixelSpacing[1]), float(first.PixelSpacing[0]), step))
    grid.SetDirection(tuple(np.stack([row, column, normal], axis=1).ravel()))
    return grid


def _segmentation(
    sources: List[Dataset],
    frames: np.ndarray,
    provenance: Mapping[str, Any],
    segment_names: Mapping[int, str],
    tracking: Optional[Tracking],
) -> highdicom.seg.Segmentation:
    values = [int(v) for v in np.unique(frames) if v > 0]
    question = clean_text(provenance.get("question") or "", "ST")
    reasoning = clean_text(provenance.get("reasoning") or "", "ST")
    if values:
        masks = np.stack([frames == value for value in values], axis=-1)
        descriptions = [
            _segment(number, _segment_label(value, segment_names), provenance, tracking, answer=number == 1)
            for number, value in enumerate(values, start=1)
        ]
    else:
        masks = np.zeros((*frames.shape, 1), bool)
        descriptions = [_segment(1, NO_FINDING, provenance, tracking, answer=True)]
        reasoning = reasoning or NO_FINDING
    algorithm = _algorithm_name(provenance)
    app = fit_text(provenance.get("app") or APP_NAME, "LO") or APP_NAME
    if "PerFrameFunctionalGroupsSequence" not in sources[0]:  # a multi-frame image keeps its thickness in its groups
        for source in sources:  # a radiograph has none; highdicom and pydicom-seg (the reader) need one
            source.SliceThickness = source.get("SliceThickness") or 1.0
    seg = highdicom.seg.Segmentation(
        source_images=sources,
        pixel_array=masks,
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=highdicom.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer="MedReasoner",
        manufacturer_model_name=algorithm,
        software_versions=app,
        device_serial_number=_weights_digest(provenance) or "none",
        series_description=algorithm,
        content_label="IMPLICIT_QUERY",
        content_creator_name="MedReasoner^",
        content_description=fit_text(question, "LO") or None,
        omit_empty_frames=False,  # every frame: the SEG covers the series' grid, and "no finding" is its empty frames
    )
    seg.SpecificCharacterSet = "ISO_IR 192"  # questions, reasoning and names need not be ASCII
    record = dict(provenance)
    if values != list(range(1, len(values) + 1)):  # segments are numbered 1, 2, ...; the label's own values kept
        record[LABEL_VALUES_KEY] = values
    seg.ImageComments = _fitting_json(record, IMAGE_COMMENTS_BYTES)
    for number, segment in enumerate(seg.SegmentSequence):
        segment.RecommendedDisplayCIELabValue = display_colour(SEGMENT_COLOURS[number % len(SEGMENT_COLOURS)])
    if question:
        description = fit_text(f"Q: {question}\nA: {reasoning}" if reasoning else question, "ST")
        for segment in seg.SegmentSequence:
            segment.SegmentDescription = description
    return seg


def _segment(
    number: int, label: str, provenance: Mapping[str, Any], tracking: Optional[Tracking], answer: bool
) -> highdicom.seg.SegmentDescription:
    """The answer's segment (the first) is coded from its words and tracked with the report; another one (a
    clinician's added label) is coded from its name alone."""
    finding = answer_finding(provenance, label) if answer else finding_of([label])
    tracking = tracking if answer else None
    refined = bool(provenance.get("refined_by_clicks"))
    return highdicom.seg.SegmentDescription(
        segment_number=number,
        segment_label=fit_text(label, "LO") or "target",
        segmented_property_category=finding.category,
        segmented_property_type=finding.type,
        algorithm_type=(
            highdicom.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
            if refined
            else highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        ),
        algorithm_identification=highdicom.AlgorithmIdentificationSequence(
            name=_algorithm_name(provenance), family=ALGORITHM_FAMILY, version=algorithm_version(provenance)
        ),
        tracking_uid=tracking.uid if tracking else None,
        tracking_id=tracking.identifier if tracking else None,
    )


def display_colour(rgb: tuple) -> List[int]:
    """An sRGB colour as DICOM's Recommended Display CIELab Value (viewers colour the segment with it; without one,
    OHIF warns on every load and picks its own): converted by Pillow's colour management (LittleCMS), D50 as DICOM's
    PCS-Lab."""
    picture = Image.new("RGB", (1, 1), tuple(rgb))
    lightness, a, b = ImageCms.applyTransform(picture, _srgb_to_lab()).getpixel((0, 0))
    return [int(v) for v in highdicom.color.CIELabColor(lightness * 100 / 255, a - 128, b - 128).value]


@functools.lru_cache(maxsize=1)
def _srgb_to_lab() -> ImageCms.ImageCmsTransform:
    """Built once per process, not for every segment of every saved SEG."""
    return ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB", 5000), "RGB", "LAB")


def algorithm_version(provenance: Mapping[str, Any]) -> str:
    """The reasoner's version and the start of its weights' digest, in the 64 bytes of a LO."""
    version = provenance.get("reasoner_version") if isinstance(provenance.get("reasoner_version"), Mapping) else {}
    parts = [str(version["version"])] if version.get("version") else []
    digest = _weights_digest(provenance)
    if digest:
        parts.append(f"sha256:{digest[:16]}")
    return fit_text(" ".join(parts), "LO") or "unknown"


def _weights_digest(provenance: Mapping[str, Any]) -> str:
    version = provenance.get("reasoner_version") if isinstance(provenance.get("reasoner_version"), Mapping) else {}
    return fit_text(version.get("sha256") or "", "LO")


def _with_pixel_plane(source: Dataset) -> Dataset:
    """A projection radiograph (DX, CR) has no plane (position, orientation, frame of reference), which a SEG's
    frames need: its header gets the pixel grid as its plane (in memory only; the SEG references the original
    instance by its SOP Instance UID)."""
    if "ImagePositionPatient" in source or "PerFrameFunctionalGroupsSequence" in source:
        return source
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing") or [1.0, 1.0]
    source.PixelSpacing = [float(v) for v in spacing]
    source.ImagePositionPatient = [0.0, 0.0, 0.0]
    source.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    source.FrameOfReferenceUID = source.get("FrameOfReferenceUID") or pydicom.uid.generate_uid()
    source.PositionReferenceIndicator = ""
    return source


def _segment_label(value: int, segment_names: Mapping[int, str]) -> str:
    return fit_text(segment_names.get(value, "target" if value == 1 else f"label {value}"), "LO") or "target"


def _algorithm_name(provenance: Mapping[str, Any]) -> str:
    reasoner = str(provenance.get("reasoner") or "").rstrip("/").rsplit("/", 1)[-1]
    model = str(provenance.get("model") or "implicit_query")
    return fit_text(f"MedReasoner {model} ({reasoner})" if reasoner else f"MedReasoner {model}", "LO")


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
    """The SEG as a label map on the reference image's grid (SEGs usually leave out empty slices), with the values
    the saved label had where this app wrote the SEG (a label of 1 and 3 comes back as 1 and 3, not 1 and 2)."""
    dataset = pydicom.dcmread(seg_file)
    segmentation = pydicom_seg.MultiClassReader().read(dataset).image
    values = _label_values(read_provenance(seg_file), len(dataset.SegmentSequence))
    if values:
        lookup = np.arange(256, dtype=np.uint8)
        lookup[1 : len(values) + 1] = values
        renumbered = SimpleITK.GetImageFromArray(lookup[SimpleITK.GetArrayFromImage(segmentation)])
        renumbered.CopyInformation(segmentation)
        segmentation = renumbered
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


def _label_values(provenance: Mapping[str, Any], segments: int) -> List[int]:
    """The label value of each segment, as `label_to_seg` recorded it; [] when none was recorded or the record does
    not fit this SEG (another tool's, or edited): the segment numbers are the values then."""
    values = provenance.get(LABEL_VALUES_KEY)
    if not isinstance(values, list) or not all(type(v) is int and 1 <= v <= 255 for v in values):
        return []
    return values if len(values) == segments == len(set(values)) else []


def segment_names(label_info: Mapping[str, Any]) -> Dict[int, str]:
    """Label value -> name from the clients' `label_info` list ([{"name": ..., "idx": ...}], Slicer and OHIF)."""
    entries: List[Any] = label_info.get("label_info") or []
    names = {}
    for position, entry in enumerate(entries if isinstance(entries, list) else []):
        if isinstance(entry, Mapping) and entry.get("name"):
            names[int(entry.get("idx") or entry.get("label") or position + 1)] = str(entry["name"])
    return names

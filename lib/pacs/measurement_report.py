"""The answer behind a saved label as a DICOM TID 1500 Measurement Report (highdicom's `MeasurementReport` in a
Comprehensive SR), stored in the PACS beside the SEG: the form OHIF, 3D Slicer (QuantitativeReporting, through dcmqi)
and PACS viewers read with no code of ours.

- Observation context: the reasoner as a device observer (its name, version and weights digest; a UID derived from
  the digest, so one model is one device) and, when known, the clinician who saved the label as a person observer.
  Procedure reported: imaging procedure. Image library: the key slice.
- One TID 1410 group: the box as a closed POLYLINE on the key slice (what OHIF draws as the measurement) and the
  finding, with no measurement (OHIF 3.13 looks for a group's region inside its first NUM, and skips the group when it
  isn't there); one TID 1410 group per key point (a POINT); one TID 1411 group that references the SEG's answer
  segment (what dcmqi, and so Slicer, reads), with the finding, the segment's volume (area for a radiograph), the
  confidence, whether the target is present ("not in this image" is Absent), whether clicks refined the mask, and the
  answer's words as TEXT items: question, reasoning, raw answer, status, box, points, clicks, window, slice, time and
  answer id (highdicom 0.22's `QualitativeEvaluation` takes codes only, so those items are made here).
  The box's group and the segment's group share the answer's tracking identifier and UID (`tracking.py`) and the
  reasoner's Algorithm Identification (TID 4019).
- Codes: DICOM's (DCM) and SNOMED CT's (SCT) where one exists (`finding_codes.py`); the names of the TEXT items and
  the confidence are this app's scheme `99MEDREASONER`, declared in the report's Coding Scheme Identification.
Every text is fitted to its VR (`dicom_text.py`); the report declares `ISO_IR 192` (UTF-8). `docs/dicom.md` lists
every code and what a viewer shows.
"""

from __future__ import annotations

import copy
import json
from typing import Any, List, Mapping, Optional

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from lib.pacs.dicom_seg import algorithm_version
from lib.pacs.dicom_text import clean_text, fit_text, shorten
from lib.pacs.finding_codes import Finding, answer_finding
from lib.pacs.source_series import key_instance, read_sources, volume_order
from lib.pacs.tracking import Tracking

SCHEME = "99MEDREASONER"
SCHEME_NAME = "MedReasoner for MONAI Label"
REPORT_SERIES_NUMBER = 301
CONFIDENCE = hd.sr.CodedConcept("CONFIDENCE", SCHEME, "Self-consistency confidence")
REFINED = hd.sr.CodedConcept("REFINED", SCHEME, "Refined by the clinician's clicks")
PERCENT = hd.sr.CodedConcept("%", "UCUM", "%")  # not UCUM "1": OHIF shows a NUM as its value, then the unit's code
TEXT_ITEMS = (  # record key, code value, meaning
    ("question", "QUESTION", "Question"),
    ("reasoning", "REASONING", "Reasoning"),
    ("raw_text", "RAW_ANSWER", "Raw answer"),
    ("status", "STATUS", "Grounding status"),
    ("box", "BOX", "Box (pixels of the key slice)"),
    ("points", "KEY_POINTS", "Key points (pixels of the key slice)"),
    ("refined_by_clicks", "CLICKS", "Refining clicks (pixels of the key slice)"),
    ("window", "WINDOW", "Display window"),
    ("slice", "SLICE", "Key slice index"),
    ("answered_at", "ANSWERED_AT", "Answered at (UTC)"),
    ("answer_id", "ANSWER_ID", "Answer log id"),
)
TARGET = hd.sr.CodedConcept("TARGET", SCHEME, "Target in the answer's words")


def measurement_report(
    seg_file: str,
    series_dir: str,
    label_file: str,
    record: Mapping[str, Any],
    tracking: Tracking,
    saved_by: Optional[str] = None,
) -> Dataset:
    """The TID 1500 report of `record` (an answer record, `grounding/records.py`) whose mask is segment 1 of the SEG
    in `seg_file` (made from `label_file`) on the DICOM series in the folder `series_dir`."""
    seg = pydicom.dcmread(seg_file, stop_before_pixels=True)
    sources = read_sources(series_dir)
    key = key_instance(sources, record.get("slice"))
    finding = answer_finding(record, str(seg.SegmentSequence[0].SegmentLabel))
    algorithm = hd.sr.AlgorithmIdentification(
        name=str(seg.SegmentSequence[0].SegmentAlgorithmName), version=algorithm_version(record)
    )
    groups: List[Any] = []
    if key is not None and (int(key.get("NumberOfFrames") or 1) == 1 or _key_frame(record, key)):
        groups += _planar_groups(record, key, finding, tracking, algorithm)  # on a multi-frame image: a known frame
    groups.append(_volumetric_group(record, seg, sources, label_file, finding, tracking, algorithm))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=_person(saved_by), observer_device_context=_device(record, algorithm)
        ),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        referenced_images=[_library_entry(key, sources, record)] if key is not None else None,
    )
    document = hd.sr.ComprehensiveSR(
        evidence=[*sources, seg],
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=REPORT_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="MedReasoner",
        is_complete=True,
    )
    document.SpecificCharacterSet = "ISO_IR 192"  # questions and reasoning need not be ASCII
    document.SeriesDescription = "MedReasoner answer"
    document.CodingSchemeIdentificationSequence = [_scheme()]
    return document


def _planar_groups(
    record: Mapping[str, Any], key: Dataset, finding: Finding, tracking: Tracking, algorithm
) -> List[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """The box (tracked with the segment) and each key point (tracked on its own), on the key slice."""
    source = hd.sr.SourceImageForRegion(key.SOPClassUID, key.SOPInstanceUID, _key_frame(record, key))
    shapes = []
    box = _numbers(record.get("box"), 4)
    if box is not None:
        x0, y0, x1, y1 = box
        outline = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], float)
        shapes.append((tracking, hd.sr.GraphicTypeValues.POLYLINE, outline))
    points = record.get("points") if isinstance(record.get("points"), list) else []
    for number, point in enumerate(points[:2], start=1):
        xy = _numbers(point, 2)
        if xy is not None:
            named = Tracking(str(hd.UID()), fit_text(f"{tracking.identifier} key point {number}", "LO"))
            shapes.append((named, hd.sr.GraphicTypeValues.POINT, np.array([xy], float)))
    return [
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=track.uid, identifier=track.identifier),
            referenced_region=hd.sr.ImageRegion(graphic_type=kind, graphic_data=data, source_image=source),
            finding_type=finding.type,
            algorithm_id=algorithm,  # no measurement here: OHIF looks for the region inside a group's first NUM
        )
        for track, kind, data in shapes
    ]


def _key_frame(record: Mapping[str, Any], key: Dataset) -> Optional[List[int]]:
    """The key slice's frame number when the series is one multi-frame image (enhanced CT/MR), else None."""
    frames, index = int(key.get("NumberOfFrames") or 1), record.get("slice")
    if frames > 1 and isinstance(index, int) and not isinstance(index, bool) and 0 <= index < frames:
        return [index + 1]
    return None


def _volumetric_group(
    record: Mapping[str, Any], seg: Dataset, sources, label_file: str, finding: Finding, tracking: Tracking, algorithm
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    count, spacing = _extent(label_file)  # the label read once: its size and whether anything was found
    present = record.get("status") != "not_found" and count > 0
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking.uid, identifier=tracking.identifier),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=1,
            source_series=hd.sr.SourceSeriesForSegmentation(sources[0].SeriesInstanceUID),
        ),
        finding_type=finding.type,
        algorithm_id=algorithm,
        measurements=[_size(count, spacing), *_confidence(record)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                codes.DCM.PresenceOfProperty, codes.SCT.Present if present else codes.SCT.Absent
            ),
            hd.sr.QualitativeEvaluation(REFINED, codes.SCT.Yes if record.get("refined_by_clicks") else codes.SCT.No),
        ],
    )
    texts = [_text(TARGET, finding.words)] if finding.words and not finding.coded else []
    for key, value, meaning in TEXT_ITEMS:
        texts.append(_text(hd.sr.CodedConcept(value, SCHEME, meaning), record.get(key)))
    group[0].ContentSequence.extend(item for item in texts if item is not None)
    return group


def _size(count: int, spacing: tuple) -> hd.sr.Measurement:
    """The answer segment's volume in mm³, or its area in mm² on a radiograph, from its voxels and their spacing."""
    if len(spacing) == 2:
        return hd.sr.Measurement(
            codes.SCT.Area, count * spacing[0] * spacing[1], hd.sr.CodedConcept("mm2", "UCUM", "mm2")
        )
    volume = count * spacing[0] * spacing[1] * spacing[2]
    return hd.sr.Measurement(codes.SCT.Volume, volume, hd.sr.CodedConcept("mm3", "UCUM", "mm3"))


def _extent(label_file: str) -> tuple[int, tuple]:
    """Voxels of the answer segment (the label's lowest value above 0) and the voxel spacing."""
    label = SimpleITK.ReadImage(label_file)
    array = SimpleITK.GetArrayViewFromImage(label)
    values = array[array > 0]
    count = int(np.count_nonzero(values == values.min())) if values.size else 0
    return count, tuple(label.GetSpacing())


def _library_entry(key: Dataset, sources, record: Mapping[str, Any]) -> Dataset:
    """The key slice as the image library describes it (highdicom reads the plane from the image's top level): a
    multi-frame image's key frame plane comes from its functional groups; a single-frame slice's missing
    SpacingBetweenSlices (many CT series leave it out) is the distance to the next slice along the normal."""
    entry = copy.deepcopy(key)
    if "SharedFunctionalGroupsSequence" in key:
        shared = key.SharedFunctionalGroupsSequence[0]
        frame = key.PerFrameFunctionalGroupsSequence[(_key_frame(record, key) or [1])[0] - 1]
        measures = (frame.get("PixelMeasuresSequence") or shared.PixelMeasuresSequence)[0]
        entry.PixelSpacing, entry.SliceThickness = measures.PixelSpacing, measures.SliceThickness
        entry.SpacingBetweenSlices = measures.get("SpacingBetweenSlices") or measures.SliceThickness
        orientation = (frame.get("PlaneOrientationSequence") or shared.PlaneOrientationSequence)[0]
        entry.ImageOrientationPatient = orientation.ImageOrientationPatient
        entry.ImagePositionPatient = frame.PlanePositionSequence[0].ImagePositionPatient
    elif len(sources) > 1 and "SpacingBetweenSlices" not in key and "ImagePositionPatient" in key:
        ordered = volume_order(sources)
        normal = np.cross(*np.reshape(np.asarray(key.ImageOrientationPatient, float), (2, 3)))
        step = np.dot(np.subtract(ordered[1].ImagePositionPatient, ordered[0].ImagePositionPatient), normal)
        entry.SpacingBetweenSlices = round(abs(float(step)), 6) or float(key.get("SliceThickness") or 1.0)
    return entry


def _confidence(record: Mapping[str, Any]) -> List[hd.sr.Measurement]:
    confidence = record.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 <= confidence <= 1:
        return []
    return [hd.sr.Measurement(CONFIDENCE, round(100 * float(confidence), 6), PERCENT)]


def _device(record: Mapping[str, Any], algorithm) -> hd.sr.ObserverContext:
    digest = (
        (record.get("reasoner_version") or {}).get("sha256")
        if isinstance(record.get("reasoner_version"), Mapping)
        else None
    )
    name = str(algorithm[0].TextValue)
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=pydicom.uid.generate_uid(entropy_srcs=[str(digest or name)]),
            name=name,
            manufacturer_name=SCHEME_NAME,
            model_name=algorithm_version(record),
            serial_number=fit_text(digest, "LO") if digest else None,
        ),
    )


def _person(saved_by: Optional[str]) -> Optional[hd.sr.ObserverContext]:
    """The clinician who saved the label, as a person name (its separators ^ and = made spaces)."""
    name = shorten(clean_text(str(saved_by or "").replace("^", " ").replace("=", " "), "LO"), 63)  # 64 with the ^
    if not name:
        return None
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,  # a login name is a family name alone: "alice^"
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=f"{name}^"),
    )


def _text(name: hd.sr.CodedConcept, value: Any) -> Optional[hd.sr.TextContentItem]:
    """A TEXT item (UT), or None for a value that is absent or empty once fitted (an empty TextValue is invalid)."""
    if value is None or value == "":
        return None
    text = fit_text(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), "UT")
    return hd.sr.TextContentItem(name, text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS) if text else None


def _numbers(value: Any, count: int) -> Optional[List[float]]:
    if not isinstance(value, (list, tuple)) or len(value) != count:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value):
        return None
    return [float(v) for v in value]


def _scheme() -> Dataset:
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = SCHEME_NAME
    return scheme


def report_texts(report: Dataset) -> dict[str, str]:
    """Meaning -> text of every TEXT item in the report, the first of each name (how a reader of the archive gets
    the answer's words back)."""
    texts: dict[str, str] = {}
    _collect_texts(report.ContentSequence, texts)
    return texts


def _collect_texts(sequence, texts: dict[str, str]) -> None:
    for item in sequence:
        if item.ValueType == "TEXT":
            texts.setdefault(str(item.ConceptNameCodeSequence[0].CodeMeaning), str(item.TextValue))
        if "ContentSequence" in item:
            _collect_texts(item.ContentSequence, texts)

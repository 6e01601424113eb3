"""The answer as the archive keeps it, made from sample series without a PACS: the SEG (highdicom) and the TID 1500
Measurement Report beside it, read back by the readers a hospital's viewers run: dcmqi's `tid1500reader` (what 3D
Slicer's QuantitativeReporting runs) and `segimage2itkimage`, highdicom's `srread`, and dicom3tools' `dciodvfy`, for a
plain answer and a hostile one (control characters, non-ASCII text over the limits), on a CT, a flipped CT, a
radiograph, and a "no finding"."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK

from lib.pacs.datastore import PacsDatastore
from lib.pacs.dicom_seg import NO_FINDING, SEGMENT_COLOURS, dcmqi_tool, label_to_seg, read_provenance, seg_to_label
from lib.pacs.measurement_report import measurement_report, report_texts
from lib.pacs.tracking import new_tracking
from monailabel_app.demo.sample_dicom import ct_series, flipped_ct_series, xray_series
from tests.support.dicom_text_checks import (
    HOSTILE,
    HOSTILE_RECORD,
    dciodvfy_messages,
    dciodvfy_text_messages,
    text_problems,
)
from tests.support.enhanced_ct import enhanced_copy

RECORD = {
    "question": "Which structure explains the dull percussion note over the right lower chest?",
    "status": "ok",
    "reasoning": "Dullness means fluid or solid lung \\ at the base. The answer is the right pleural effusion.",
    "raw_text": "<think>...</think><answer>{...}</answer>",
    "box": [30.0, 20.0, 60.0, 40.0],
    "points": [[40.0, 25.0], [50.0, 35.0]],
    "slice": 6,
    "confidence": 0.75,
    "reasoner": "/models/MedReasoner-Soft-7B",
    "reasoner_version": {"version": "v3", "source": "published", "sha256": "ab" * 32},
    "answered_at": "2026-12-03T10:00:00Z",
    "answer_id": "a1b2c3",
}


def _answer(folder: Path, make_series, record, mark, names=None, saved_by="alice"):
    """The series, its label (`mark` sets voxels of the volume array), the SEG and the report, as files."""
    series = make_series(folder / "dicom")
    volume = SimpleITK.ReadImage([str(p) for p in sorted(series.files)]) if len(series.files) > 1 else None
    volume = volume if volume is not None else SimpleITK.ReadImage(str(series.files[0]))[:, :, 0]
    label = np.zeros(SimpleITK.GetArrayFromImage(volume).shape, np.uint8)
    mark(label)
    image = SimpleITK.GetImageFromArray(label)
    image.CopyInformation(volume)
    label_file = str(folder / "label.nii.gz")
    SimpleITK.WriteImage(image, label_file)
    tracking = new_tracking(record)
    seg_file = str(folder / "seg.dcm")
    shutil.move(label_to_seg(label_file, str(folder / "dicom"), record, names or {1: "lesion"}, tracking), seg_file)
    report = measurement_report(seg_file, str(folder / "dicom"), label_file, record, tracking, saved_by)
    report_file = str(folder / "sr.dcm")
    report.save_as(report_file, write_like_original=False)
    return series, label_file, seg_file, report_file, tracking


def _box_and_more(label):
    label[6, 20:40, 30:60] = 1
    label[7, 22:30, 32:40] = 2  # a second label a clinician drew: a second segment


@pytest.fixture(scope="module")
def ct_answer(tmp_path_factory):
    names = {1: "Answer: left\\right\x07 base", 2: "pleura"}
    return _answer(tmp_path_factory.mktemp("ct"), ct_series, RECORD, _box_and_more, names)


@pytest.fixture(scope="module")
def hostile_answer(tmp_path_factory):
    return _answer(
        tmp_path_factory.mktemp("hostile"),
        ct_series,
        HOSTILE_RECORD,
        _box_and_more,
        {1: "Läsion " + HOSTILE},
        saved_by="^=" + HOSTILE,
    )


@pytest.fixture(scope="module")
def no_finding(tmp_path_factory):
    record = {**RECORD, "status": "not_found", "box": None, "points": None, "reasoning": "No pneumothorax."}
    return _answer(tmp_path_factory.mktemp("none"), ct_series, record, lambda label: None)


def _tid1500(report_file: str, tmp_path: Path) -> dict:
    out = tmp_path / "report.json"
    run = subprocess.run(
        [dcmqi_tool("tid1500reader"), "--inputDICOM", report_file, "--outputMetadata", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(out.read_text())


def _segments_read_by_dcmqi(seg_file: str, tmp_path: Path) -> tuple[list, SimpleITK.Image]:
    """The segments' attributes and one label map of them all, segment n as value n (dcmqi writes its segments in
    groups, one image per group, each segment as its labelID)."""
    out = tmp_path / "segments"
    out.mkdir()
    run = subprocess.run(
        [dcmqi_tool("segimage2itkimage"), "--inputDICOM", seg_file, "--outputDirectory", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    groups = json.loads((out / "meta.json").read_text())["segmentAttributes"]
    merged = None
    for number, group in enumerate(groups, start=1):
        image = SimpleITK.ReadImage(str(out / f"{number}.nrrd"))
        array = SimpleITK.GetArrayFromImage(image)
        merged = np.zeros(array.shape, np.uint8) if merged is None else merged
        for segment in group:
            merged[array == segment["labelID"]] = segment["labelID"]
    result = SimpleITK.GetImageFromArray(merged)
    result.CopyInformation(image)
    return [segment for group in groups for segment in group], result


def test_slicers_reader_gets_finding_tracking_segment_and_measurements(ct_answer, tmp_path):
    series, _, seg_file, report_file, tracking = ct_answer
    seg = pydicom.dcmread(seg_file, stop_before_pixels=True)
    read = _tid1500(report_file, tmp_path)
    volumetric = [m for m in read["Measurements"] if "ReferencedSegment" in m]
    assert len(volumetric) == 1
    group = volumetric[0]
    assert group["Finding"] == {
        "CodeValue": "60046008",
        "CodingSchemeDesignator": "SCT",
        "CodeMeaning": "Pleural effusion",
    }
    assert group["TrackingIdentifier"] == tracking.identifier == "MedReasoner answer a1b2c3"
    assert group["TrackingUniqueIdentifier"] == tracking.uid
    assert group["ReferencedSegment"] == 1 and group["SourceSeriesForImageSegmentation"] == series.series_uid
    assert read["compositeContext"] == [seg.SOPInstanceUID]
    measured = {
        item["quantity"]["CodeMeaning"]: (float(item["value"]), item["units"]["CodeValue"])
        for item in group["measurementItems"]
    }
    spacing = np.prod(SimpleITK.ReadImage(ct_answer[1]).GetSpacing())
    assert measured["Volume"] == (pytest.approx(20 * 30 * spacing, rel=1e-5), "mm3")
    assert measured["Self-consistency confidence"] == (75.0, "%")
    said = {e["conceptCode"]["CodeMeaning"]: e["conceptValue"] for e in group["qualitativeEvaluations"]}
    assert said["Presence of property"]["CodeMeaning"] == "Present"
    assert said["Refined by the clinician's clicks"]["CodeMeaning"] == "No"
    assert said["Question"] == RECORD["question"] and said["Reasoning"] == RECORD["reasoning"]
    assert read["observerContext"] == {"ObserverType": "PERSON", "PersonObserverName": "alice^"}
    assert group["measurementAlgorithmIdentification"] == {
        "AlgorithmName": "MedReasoner implicit_query (MedReasoner-Soft-7B)",
        "AlgorithmVersion": f"v3 sha256:{'ab' * 8}",
    }


def test_the_seg_reads_back_voxel_for_voxel_with_its_codes(ct_answer, tmp_path):
    _, label_file, seg_file, _, tracking = ct_answer
    segments, image = _segments_read_by_dcmqi(seg_file, tmp_path)
    label = SimpleITK.ReadImage(label_file)
    on_grid = SimpleITK.Resample(image, label, SimpleITK.Transform(), SimpleITK.sitkNearestNeighbor, 0)
    assert [s["labelID"] for s in segments] == [1, 2]  # segment n is the label's n-th value, here 1 and 2
    assert np.array_equal(SimpleITK.GetArrayFromImage(on_grid), SimpleITK.GetArrayFromImage(label))
    answer, drawn = segments
    assert answer["SegmentLabel"] == "Answer: left/right base" and drawn["SegmentLabel"] == "pleura"
    assert answer["SegmentedPropertyTypeCodeSequence"]["CodeMeaning"] == "Pleural effusion"
    assert answer["SegmentedPropertyCategoryCodeSequence"]["CodeValue"] == "49755003"
    assert drawn["SegmentedPropertyTypeCodeSequence"]["CodeMeaning"] == "Pleura"  # coded from its own name
    assert answer["SegmentAlgorithmType"] == "AUTOMATIC"
    palette = np.array(SEGMENT_COLOURS)
    for number, segment in enumerate(segments):  # the colour the SEG recommends, read back by dcmqi (its own D65 Lab)
        distances = np.abs(palette - np.array(segment["recommendedDisplayRGBValue"])).sum(axis=1)
        assert distances.argmin() == number, segment["recommendedDisplayRGBValue"]
    assert answer["TrackingUniqueIdentifier"] == tracking.uid and "TrackingUniqueIdentifier" not in drawn
    description = pydicom.dcmread(seg_file, stop_before_pixels=True).SegmentSequence[0].SegmentDescription
    assert description == f"Q: {RECORD['question']}\nA: {RECORD['reasoning']}"


def test_the_box_and_points_are_drawn_on_the_key_slice(ct_answer):
    series, _, seg_file, report_file, tracking = ct_answer
    document = hd.sr.srread(report_file)
    key = pydicom.dcmread(str(next(p for p in series.files if p.name == "CT_006.dcm")))
    planar = document.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in planar] == [tracking.identifier] + [
        f"{tracking.identifier} key point {n}" for n in (1, 2)
    ]
    assert all(group.get_measurements() == [] for group in planar)  # OHIF drops a group whose first NUM has no region
    box, *points = (g.roi for g in planar)
    assert box.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    assert box.value.tolist() == [[30, 20], [60, 20], [60, 40], [30, 40], [30, 20]]
    assert [p.value.tolist() for p in points] == [[[40, 25]], [[50, 35]]]
    for region in (box, *points):
        assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == key.SOPInstanceUID
    assert planar[0].tracking_uid == tracking.uid
    (volumetric,) = document.content.get_volumetric_roi_measurement_groups()
    segment = volumetric.referenced_segment
    assert segment.referenced_sop_instance_uid == pydicom.dcmread(seg_file, stop_before_pixels=True).SOPInstanceUID
    assert segment.referenced_segment_numbers == [1]
    texts = report_texts(pydicom.dcmread(report_file))
    assert json.loads(texts["Key points (pixels of the key slice)"]) == RECORD["points"]
    assert texts["Raw answer"] == RECORD["raw_text"] and texts["Answer log id"] == RECORD["answer_id"]


def test_no_finding_is_an_empty_segment_and_an_absent_finding(no_finding, tmp_path):
    _, label_file, seg_file, report_file, _ = no_finding
    seg = pydicom.dcmread(seg_file)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [NO_FINDING] and not seg.pixel_array.any()
    assert seg.NumberOfFrames == SimpleITK.ReadImage(label_file).GetSize()[2]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Pneumothorax"  # looked for
    read = _tid1500(report_file, tmp_path)
    (group,) = read["Measurements"]  # no box: no planar group
    said = {e["conceptCode"]["CodeMeaning"]: e["conceptValue"] for e in group["qualitativeEvaluations"]}
    assert said["Presence of property"]["CodeMeaning"] == "Absent" and said["Grounding status"] == "not_found"
    assert float(group["measurementItems"][0]["value"]) == 0.0


@pytest.mark.parametrize("make_series", [flipped_ct_series, xray_series], ids=["feet-first CT", "radiograph"])
def test_the_seg_matches_the_label_on_other_geometries(make_series, tmp_path):
    def mark(label):
        label[(slice(1, 2),) * (label.ndim - 2) + (slice(10, 30), slice(5, 25))] = 1

    record = {**RECORD, "slice": 1}
    _, label_file, seg_file, report_file, _ = _answer(tmp_path, make_series, record, mark)
    _, image = _segments_read_by_dcmqi(seg_file, tmp_path)
    label = SimpleITK.ReadImage(label_file)
    if label.GetDimension() == 2:  # a radiograph's SEG is one frame on its pixel grid
        assert np.array_equal(SimpleITK.GetArrayFromImage(image)[0] > 0, SimpleITK.GetArrayFromImage(label) > 0)
    else:
        on_grid = SimpleITK.Resample(image, label, SimpleITK.Transform(), SimpleITK.sitkNearestNeighbor, 0)
        assert np.array_equal(SimpleITK.GetArrayFromImage(on_grid) > 0, SimpleITK.GetArrayFromImage(label) > 0)
    assert _tid1500(report_file, tmp_path)["Measurements"]


def test_an_unknown_slice_draws_no_box_but_keeps_the_segment(ct_answer, tmp_path):
    series, label_file, seg_file, _, tracking = ct_answer
    dicom_dir = str(series.files[0].parent)
    for unknown in (None, "abc", [1], 99, True):
        record = {**RECORD, "slice": unknown}
        measurement_report(seg_file, dicom_dir, label_file, record, tracking).save_as(str(tmp_path / "sr.dcm"))
        document = hd.sr.srread(str(tmp_path / "sr.dcm"))
        assert document.content.get_planar_roi_measurement_groups() == []
        assert len(document.content.get_volumetric_roi_measurement_groups()) == 1


def test_a_source_the_report_cannot_use_costs_the_report_not_the_label(ct_answer, tmp_path):
    series, label_file, seg_file, _, tracking = ct_answer
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    for path in series.files:  # anonymised the hard way: attributes the SR copies are gone
        ds = pydicom.dcmread(str(path))
        del ds.StudyID, ds.AccessionNumber
        ds.save_as(str(stripped / path.name))
    with pytest.raises(AttributeError):
        measurement_report(seg_file, str(stripped), label_file, RECORD, tracking)
    datastore = PacsDatastore.__new__(PacsDatastore)  # only the report step: no PACS needed
    assert datastore._write_report(seg_file, str(stripped), label_file, RECORD, tracking, None) is None
    assert datastore._store_report(None, "1.2.3") == {"report_stored": False}


def test_hostile_text_fits_every_text_element_of_the_seg_and_the_report(hostile_answer, tmp_path):
    _, _, seg_file, report_file, _ = hostile_answer
    assert text_problems(seg_file) == [] and text_problems(report_file) == []
    seg, report = pydicom.dcmread(seg_file), pydicom.dcmread(report_file)
    assert seg.SpecificCharacterSet == report.SpecificCharacterSet == "ISO_IR 192"
    label = seg.SegmentSequence[0].SegmentLabel
    assert label.startswith("Läsion [31mééé") and label.endswith("…")
    provenance = read_provenance(seg_file)  # what training reads back: valid JSON, cleaned, within LT
    assert provenance["question"] == "[31m" + "é" * 80 + "\n\r\n \x0c\n\\ end"
    texts = report_texts(report)
    assert texts["Question"] == provenance["question"] and len(texts["Reasoning"].encode()) > 10_240  # UT: all of it
    assert texts["Grounding status"] == "ok]0;owned"
    observer = _tid1500(report_file, tmp_path)["observerContext"]["PersonObserverName"]
    assert observer.endswith("^") and observer.count("^") == 1 and "=" not in observer  # one family name


@pytest.mark.parametrize("answer", ["ct_answer", "hostile_answer", "no_finding"])
def test_dciodvfy_reports_no_error(answer, request):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dicom3tools' dciodvfy is not installed (bash scripts/install_system.sh)")
    for path in request.getfixturevalue(answer)[2:4]:
        messages = dciodvfy_messages(path)
        assert [line for line in messages if line.startswith("Error")] == [], path
        assert dciodvfy_text_messages(path) == [], path
        unknown_scheme = "Unrecognized defined term = <99MEDREASONER>"  # the app's declared private scheme
        assert [line for line in messages if unknown_scheme not in line] == [], path


def test_a_multi_frame_image_gets_its_box_on_the_key_frame(ct_answer, tmp_path):
    series, label_file, _, _, tracking = ct_answer
    enhanced_copy(series.files, tmp_path / "enhanced")
    seg_file = label_to_seg(label_file, str(tmp_path / "enhanced"), RECORD, {1: "lesion"}, tracking)
    for record, frames in ((RECORD, [7]), ({**RECORD, "slice": 40}, None)):
        report_file = str(tmp_path / "sr.dcm")
        measurement_report(seg_file, str(tmp_path / "enhanced"), label_file, record, tracking).save_as(report_file)
        planar = hd.sr.srread(report_file).content.get_planar_roi_measurement_groups()
        if frames is None:  # a frame the image doesn't have: no box, rather than a box on no frame
            assert planar == []
            continue
        referenced = planar[0].roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert int(referenced.ReferencedFrameNumber) == frames[0]  # the key slice, 6, is frame 7
        assert [line for line in dciodvfy_messages(report_file) or [] if line.startswith("Error")] == []
    assert pydicom.dcmread(seg_file).NumberOfFrames == 2 * SimpleITK.ReadImage(label_file).GetSize()[2]


def test_clicks_that_refined_the_mask_make_it_semiautomatic(tmp_path):
    clicks = {"foreground": [[45, 30]], "background": [[58, 22]]}
    record = {**RECORD, "refined_by_clicks": clicks}
    _, _, seg_file, report_file, _ = _answer(tmp_path, ct_series, record, lambda label: label.__setitem__(6, 1))
    assert pydicom.dcmread(seg_file, stop_before_pixels=True).SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    (group,) = [m for m in _tid1500(report_file, tmp_path)["Measurements"] if "ReferencedSegment" in m]
    said = {e["conceptCode"]["CodeMeaning"]: e["conceptValue"] for e in group["qualitativeEvaluations"]}
    assert said["Refined by the clinician's clicks"]["CodeMeaning"] == "Yes"
    assert json.loads(said["Refining clicks (pixels of the key slice)"]) == clicks


def test_a_label_with_gaps_between_its_values_comes_back_with_them(tmp_path):
    """A SEG numbers its segments 1, 2, ...: a label of 1 and 3 was read back as 1 and 2 on a fresh machine. The
    values go into the SEG's record and come back; a record that does not fit the SEG (edited, another tool's) is
    ignored and the segment numbers are the values."""

    def one_and_three(label):
        label[6, 20:40, 30:60] = 1
        label[7, 22:30, 32:40] = 3

    _, label_file, seg_file, _, _ = _answer(tmp_path, ct_series, RECORD, one_and_three, {1: "lesion", 3: "pleura"})
    seg = pydicom.dcmread(seg_file)
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2]  # the standard's numbering
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lesion", "pleura"]
    reference = str(tmp_path / "reference.nii.gz")
    SimpleITK.WriteImage(SimpleITK.ReadImage(label_file), reference)
    saved = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(label_file))
    assert np.array_equal(SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(seg_to_label(seg_file, reference))), saved)
    for record in ([1, 300], [3, 3], ["1", "3"], [1], "1,3"):
        edited = json.loads(seg.ImageComments)
        edited["label_values"] = record
        seg.ImageComments = json.dumps(edited)
        seg.save_as(tmp_path / "edited.dcm")
        numbered = SimpleITK.GetArrayFromImage(
            SimpleITK.ReadImage(seg_to_label(str(tmp_path / "edited.dcm"), reference))
        )
        assert np.array_equal(numbered, np.where(saved == 3, 2, saved)), record

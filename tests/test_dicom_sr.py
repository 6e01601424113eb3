"""The answer's DICOM SR and the SEG it references, made from sample series without a PACS (dcmqi + highdicom); with a
hostile answer (control characters, non-ASCII text over the limits) every text element of both still fits its VR."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK

from lib.pacs.datastore import PacsDatastore
from lib.pacs.dicom_seg import label_to_seg, read_provenance
from lib.pacs.dicom_sr import reasoning_report, report_texts
from monailabel_app.demo.sample_dicom import ct_series
from tests.support.dicom_text_checks import HOSTILE, HOSTILE_RECORD, dciodvfy_text_messages, text_problems

RECORD = {
    "question": "Which structure explains the dull percussion note?",
    "status": "ok",
    "reasoning": "A dense region at the right base \\ consolidation.",
    "raw_text": "<think>...</think><answer>{...}</answer>",
    "box": [10.0, 12.0, 40.0, 44.0],
    "points": [[20.0, 25.0], [30.0, 35.0]],
    "slice": 6,
    "reasoner": "/models/MedReasoner-Soft-7B",
    "reasoner_version": {"version": "v3", "source": "published", "sha256": "ab" * 32},
    "answered_at": "2026-12-03T10:00:00Z",
}


def _ct_and_label(folder):
    series = ct_series(folder / "dicom")
    volume = SimpleITK.ReadImage([str(p) for p in sorted(series.files, key=lambda p: p.name)])
    label = np.zeros(SimpleITK.GetArrayFromImage(volume).shape, np.uint8)
    label[6, 20:40, 30:60] = 1
    image = SimpleITK.GetImageFromArray(label)
    image.CopyInformation(volume)
    label_file = str(folder / "label.nii.gz")
    SimpleITK.WriteImage(image, label_file)
    return series, label_file


@pytest.fixture(scope="module")
def ct_and_seg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    series, label_file = _ct_and_label(folder)
    # a segment name with a backslash (DICOM's value separator) and a control character: the SEG is still written
    seg = label_to_seg(label_file, str(folder / "dicom"), RECORD, {1: "Answer: left\\right\x07 base"})
    return series, folder / "dicom", seg


@pytest.fixture(scope="module")
def hostile_seg_and_report(tmp_path_factory):
    """The SEG (dcmqi) and SR of an answer whose every text is hostile, a non-ASCII segment name too."""
    folder = tmp_path_factory.mktemp("hostile")
    _, label_file = _ct_and_label(folder)
    seg = str(folder / "seg.dcm")
    shutil.move(label_to_seg(label_file, str(folder / "dicom"), HOSTILE_RECORD, {1: "Läsion " + HOSTILE}), seg)
    report = str(folder / "sr.dcm")
    reasoning_report(seg, str(folder / "dicom"), HOSTILE_RECORD, HOSTILE_RECORD["app"]).save_as(
        report, write_like_original=False
    )
    return seg, report


def test_the_report_holds_the_answer_and_references_seg_and_key_slice(ct_and_seg):
    series, dicom_dir, seg_file = ct_and_seg
    seg = pydicom.dcmread(seg_file, stop_before_pixels=True)
    assert seg.SegmentSequence[0].SegmentLabel == "Answer: left/right base"
    assert seg.SegmentSequence[0].SegmentDescription == f"Q: {RECORD['question']}\nA: {RECORD['reasoning']}"
    report = reasoning_report(seg_file, str(dicom_dir), RECORD, "MedReasoner test")
    texts = report_texts(report)
    assert texts["Reasoning"] == RECORD["reasoning"] and texts["Question"] == RECORD["question"]
    assert json.loads(texts["Key points (pixels of the key slice)"]) == RECORD["points"]
    assert texts["Algorithm Version"] == f"version v3, source published, sha256 {'ab' * 32}"
    composite, image = report.ContentSequence[-2:]
    assert composite.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
    key = next(p for p in series.files if p.name == "CT_006.dcm")
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == pydicom.dcmread(str(key)).SOPInstanceUID


def test_an_unknown_slice_names_no_key_slice(ct_and_seg):
    _, dicom_dir, seg_file = ct_and_seg
    for unknown in (None, "abc", [1], 99):
        report = reasoning_report(seg_file, str(dicom_dir), {**RECORD, "slice": unknown}, "MedReasoner test")
        assert [item.ValueType for item in report.ContentSequence[-1:]] == ["COMPOSITE"]


def test_a_source_the_report_cannot_use_costs_the_report_not_the_label(ct_and_seg, tmp_path):
    _, dicom_dir, seg_file = ct_and_seg
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    for path in dicom_dir.iterdir():  # anonymised the hard way: attributes the SR copies are gone
        ds = pydicom.dcmread(str(path))
        del ds.StudyID, ds.AccessionNumber
        ds.save_as(str(stripped / path.name))
    with pytest.raises(AttributeError):
        reasoning_report(seg_file, str(stripped), RECORD, "MedReasoner test")
    datastore = PacsDatastore.__new__(PacsDatastore)  # only the report step: no PACS needed
    assert datastore._write_report(seg_file, str(stripped), {**RECORD, "app": "test"}) is None
    assert datastore._store_report(None, "1.2.3") == {"report_stored": False}


def test_hostile_text_fits_every_text_element_of_the_seg_and_the_report(hostile_seg_and_report):
    seg_file, report_file = hostile_seg_and_report
    assert text_problems(seg_file) == [] and text_problems(report_file) == []
    seg, report = pydicom.dcmread(seg_file), pydicom.dcmread(report_file)
    assert seg.SpecificCharacterSet == report.SpecificCharacterSet == "ISO_IR 192"
    label = seg.SegmentSequence[0].SegmentLabel  # dcmqi refuses a non-ASCII label: written after it
    assert label.startswith("Läsion [31mééé") and label.endswith("…")
    assert seg.SeriesDescription.startswith("MedReasoner implicit/query [31méé")  # one value, no backslash
    provenance = read_provenance(seg_file)  # what training reads back: valid JSON, cleaned, within LT
    assert provenance["question"] == "[31m" + "é" * 80 + "\n\r\n \x0c\n\\ end"
    texts = report_texts(report)
    assert texts["Question"] == provenance["question"] and len(texts["Reasoning"].encode()) > 10_240  # UT: all of it
    assert texts["Grounding status"] == "ok]0;owned"


def test_dciodvfy_finds_no_text_problem_in_the_seg_or_the_report(hostile_seg_and_report):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dicom3tools' dciodvfy is not installed (apt-get install dicom3tools)")
    for path in hostile_seg_and_report:
        assert dciodvfy_text_messages(path) == [], path

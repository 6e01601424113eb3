"""The answer's DICOM SR and the SEG it references, made from sample series without a PACS (dcmqi + highdicom)."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import SimpleITK

from lib.pacs.datastore import PacsDatastore
from lib.pacs.dicom_seg import label_to_seg
from lib.pacs.dicom_sr import reasoning_report, report_texts
from monailabel_app.demo.sample_dicom import ct_series

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


@pytest.fixture(scope="module")
def ct_and_seg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    series = ct_series(folder / "dicom")
    volume = SimpleITK.ReadImage([str(p) for p in sorted(series.files, key=lambda p: p.name)])
    label = np.zeros(SimpleITK.GetArrayFromImage(volume).shape, np.uint8)
    label[6, 20:40, 30:60] = 1
    image = SimpleITK.GetImageFromArray(label)
    image.CopyInformation(volume)
    label_file = str(folder / "label.nii.gz")
    SimpleITK.WriteImage(image, label_file)
    # a segment name with a backslash (DICOM's value separator) and a control character: the SEG is still written
    seg = label_to_seg(label_file, str(folder / "dicom"), RECORD, {1: "Answer: left\\right\x07 base"})
    return series, folder / "dicom", seg


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

"""The "No finding" SEG (the saved negative) for a series stored as one multi-frame image (enhanced CT/MR), made
without a PACS: one empty frame per frame of the source, each frame referenced once, and it reads back as an empty
label on the series' grid, as a training run reads it. With a hostile answer, every text element of the "No finding"
SEG (highdicom) and of its SR still fits its VR."""

from __future__ import annotations

import shutil

import pydicom
import pytest
import SimpleITK

from lib.pacs.dicom_seg import NO_FINDING, label_to_seg, seg_to_label
from lib.pacs.measurement_report import measurement_report
from lib.pacs.tracking import new_tracking
from monailabel_app.demo.sample_dicom import ct_series
from tests.support.dicom_text_checks import HOSTILE, HOSTILE_RECORD, dciodvfy_text_messages, text_problems
from tests.support.enhanced_ct import enhanced_copy


def test_a_multi_frame_series_gets_one_empty_frame_per_source_frame(tmp_path):
    series = ct_series(tmp_path / "single_frames")
    enhanced = enhanced_copy(series.files, tmp_path / "enhanced")
    volume = SimpleITK.ReadImage([str(path) for path in sorted(series.files, key=lambda p: p.name)])
    empty = SimpleITK.Image(volume.GetSize(), SimpleITK.sitkUInt8)
    empty.CopyInformation(volume)
    SimpleITK.WriteImage(empty, str(tmp_path / "label.nii.gz"))

    seg_file = label_to_seg(
        str(tmp_path / "label.nii.gz"), str(tmp_path / "enhanced"), {"question": "Any mass?"}, {1: "target"}
    )

    seg = pydicom.dcmread(seg_file)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [NO_FINDING]
    assert seg.NumberOfFrames == series.geometry.slices and not seg.pixel_array.any()
    sources = [f.DerivationImageSequence[0].SourceImageSequence[0] for f in seg.PerFrameFunctionalGroupsSequence]
    assert {s.ReferencedSOPInstanceUID for s in sources} == {enhanced.SOPInstanceUID}
    assert sorted(int(s.ReferencedFrameNumber) for s in sources) == list(range(1, series.geometry.slices + 1))
    reference = str(tmp_path / "volume.nii.gz")
    SimpleITK.WriteImage(volume, reference)
    # the reader training uses (pydicom-seg) takes a SEG whose frames point into one multi-frame image
    label = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(seg_to_label(seg_file, reference)))
    assert label.shape == SimpleITK.GetArrayFromImage(volume).shape and not label.any()


@pytest.fixture(scope="module")
def hostile_no_finding(tmp_path_factory):
    """The "No finding" SEG and its SR for an answer whose every text is hostile."""
    folder = tmp_path_factory.mktemp("hostile_no_finding")
    series = ct_series(folder / "dicom")
    volume = SimpleITK.ReadImage([str(path) for path in sorted(series.files, key=lambda p: p.name)])
    empty = SimpleITK.Image(volume.GetSize(), SimpleITK.sitkUInt8)
    empty.CopyInformation(volume)
    SimpleITK.WriteImage(empty, str(folder / "label.nii.gz"))
    seg = str(folder / "seg.dcm")
    shutil.move(label_to_seg(str(folder / "label.nii.gz"), str(folder / "dicom"), HOSTILE_RECORD, {}), seg)
    report = str(folder / "sr.dcm")
    label, tracking = str(folder / "label.nii.gz"), new_tracking(HOSTILE_RECORD)
    measurement_report(seg, str(folder / "dicom"), label, HOSTILE_RECORD, tracking, HOSTILE).save_as(
        report, write_like_original=False
    )
    return seg, report


def test_hostile_text_fits_every_text_element_of_the_no_finding_seg_and_its_report(hostile_no_finding):
    seg_file, report_file = hostile_no_finding
    assert text_problems(seg_file) == [] and text_problems(report_file) == []
    seg = pydicom.dcmread(seg_file)
    assert seg.SpecificCharacterSet == "ISO_IR 192" and seg.SegmentSequence[0].SegmentLabel == NO_FINDING
    # highdicom wrote these before the character set was UTF-8: no "?" in place of a character
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    for value in (seg.ManufacturerModelName, seg.SoftwareVersions, algorithm.AlgorithmName, algorithm.AlgorithmVersion):
        assert value.endswith("…") and "?" not in value


def test_dciodvfy_finds_no_text_problem_in_the_no_finding_seg_or_its_report(hostile_no_finding):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dicom3tools' dciodvfy is not installed (apt-get install dicom3tools)")
    for path in hostile_no_finding:
        assert dciodvfy_text_messages(path) == [], path

"""The "No finding" SEG (the saved negative) for a series stored as one multi-frame image (enhanced CT/MR), made
without a PACS: one empty frame per frame of the source, each frame referenced once, and it reads back as an empty
label on the series' grid, as a training run reads it."""

from __future__ import annotations

import highdicom
import pydicom
import SimpleITK

from lib.pacs.dicom_seg import NO_FINDING, label_to_seg, seg_to_label
from monailabel_app.demo.sample_dicom import ct_series


def test_a_multi_frame_series_gets_one_empty_frame_per_source_frame(tmp_path):
    series = ct_series(tmp_path / "single_frames")
    slices = [pydicom.dcmread(str(path)) for path in series.files]
    for one in slices:
        one.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]  # the legacy conversion requires it
    enhanced = highdicom.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=slices,
        series_instance_uid=highdicom.UID(),
        series_number=9,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
    )
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(str(tmp_path / "enhanced" / "ct.dcm"))
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

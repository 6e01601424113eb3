"""A fresh machine still reads back, as training labels, the SEGs and SRs that earlier versions (up to 3ab249c)
archived: dcmqi's SEG of a label with voxels (two label values on a CT, one on a radiograph) and highdicom's "No
finding" SEG, each with the question as JSON in ImageComments, beside the private 99MEDREASONER SR. They are written
by the frozen earlier writer (`tests/support/earlier_archive.py`), stored in a real Orthanc, and read through a new
datastore with an empty cache, as training reads them: voxel for voxel, the question and answer in the label info,
"no finding" a negative sample, every one counted as labelled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK

from lib.pacs.datastore import PacsDatastore
from lib.pacs.dicomweb import PacsSettings, pacs_client
from monailabel_app.data.datastore_samples import datastore_samples
from monailabel_app.demo.sample_dicom import Series, ct_series, xray_series
from monailabel_app.imaging.medical_image import read_medical_image
from tests.support.earlier_archive import NO_FINDING, write_earlier_archive
from tests.support.orthanc_server import INSTALL_HINT, OrthancServer, orthanc_installed

pytestmark = [pytest.mark.server, pytest.mark.skipif(not orthanc_installed(), reason=INSTALL_HINT)]

QUESTION = "Which structure would explain the dull percussion note over the right lower chest?"
CT_SLICE = 6


def earlier_provenance(question: str, slice_index: int, answer_id: str) -> dict:
    """What an earlier save wrote into ImageComments (lib/pacs/dicom_seg.py provenance_of at 3ab249c: the answer's
    fields in PROVENANCE_KEYS order, then "app")."""
    return {
        "question": question,
        "model": "implicit_query",
        "slice": slice_index,
        "window": "soft_tissue",
        "reasoner": "/models/medreasoner-grpo",
        "reasoner_version": {"version": "0.3.1", "sha256": "9f2c" * 16},
        "status": "ok",
        "reasoning": "Dullness at the right base points to fluid in the pleural space.",
        "raw_text": '<think>dullness</think><answer>{"box": [40, 30, 70, 60]}</answer>',
        "box": [40, 30, 70, 60],
        "points": [[55, 45]],
        "answered_at": "2024-11-05T09:12:44Z",
        "answer_id": answer_id,
        "app": "MedReasoner for MONAI Label 0.9.0",
    }


def image_on_the_datastores_grid(series: Series) -> SimpleITK.Image:
    """The series as MONAI Label's datastore gives it (a volume along the slice normal; a radiograph as one 2D
    picture): the grid an earlier save's label was on."""
    files = [str(path) for path in series.files]
    if len(files) == 1:
        return SimpleITK.ReadImage(files[0], imageIO="GDCMImageIO")[:, :, 0]
    reader = SimpleITK.ImageSeriesReader()
    reader.SetFileNames(SimpleITK.ImageSeriesReader.GetGDCMSeriesFileNames(str(Path(files[0]).parent)))
    return reader.Execute()


def write_label_file(series: Series, label: np.ndarray, path: Path) -> str:
    image = SimpleITK.GetImageFromArray(label.astype(np.uint8))
    image.CopyInformation(image_on_the_datastores_grid(series))
    SimpleITK.WriteImage(image, str(path), True)
    return str(path)


def ct_label(series: Series) -> np.ndarray:
    """Two label values, as a Slicer save with two segments sent them."""
    geometry = series.geometry
    label = np.zeros((geometry.slices, geometry.rows, geometry.columns), np.uint8)
    label[CT_SLICE - 1 : CT_SLICE + 2, 30:50, 40:70] = 1
    label[CT_SLICE, 60:70, 20:35] = 2
    return label


def dx_label(series: Series) -> np.ndarray:
    label = np.zeros((series.geometry.rows, series.geometry.columns), np.uint8)
    label[50:90, 100:160] = 1
    return label


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Four series in a real Orthanc, each with the SEG and SR an earlier version stored for its saved label."""
    folder = tmp_path_factory.mktemp("earlier_archive")
    pacs = OrthancServer(folder / "orthanc").start()
    ct, healthy_ct = ct_series(folder / "ct"), ct_series(folder / "healthy_ct")
    dx, healthy_cr = xray_series(folder / "dx", "DX"), xray_series(folder / "healthy_cr", "CR")
    cases = {
        "ct_two_values": (ct, ct_label(ct), {1: "effusion", 2: "atelectasis"}),
        "ct_no_finding": (healthy_ct, np.zeros_like(ct_label(healthy_ct)), {1: "target"}),
        "dx": (dx, dx_label(dx), {1: "target"}),
        "cr_no_finding": (healthy_cr, np.zeros_like(dx_label(healthy_cr)), {1: "target"}),
    }
    archived = {}
    try:
        for name, (series, label, names) in cases.items():
            pacs.upload(series.files)
            slice_index = CT_SLICE if label.ndim == 3 else 0
            provenance = earlier_provenance(QUESTION, slice_index, f"answer-{name}")
            label_file = write_label_file(series, label, folder / f"{name}.nii.gz")
            seg_file, report_file = write_earlier_archive(
                label_file, str(series.files[0].parent), provenance, names, str(folder / f"{name}_archive")
            )
            pacs.upload([Path(seg_file), Path(report_file)])
            seg = pydicom.dcmread(seg_file, stop_before_pixels=True)
            report = pydicom.dcmread(report_file)
            archived[name] = {"series": series, "label": label, "provenance": provenance, "seg": seg, "report": report}
        yield pacs, archived
    finally:
        pacs.stop()


def fresh_datastore(pacs: OrthancServer, cache: Path) -> PacsDatastore:
    """A new machine: nothing cached, everything from the PACS (as test_pacs.py's fresh-machine test)."""
    return PacsDatastore(pacs_client(pacs.dicomweb_url, 30), PacsSettings(), "test", str(cache))


def test_the_archive_is_in_the_earlier_format(archive):
    """What the rest of this file reads: dcmqi's and highdicom's SEGs (series 300) with the question in them, each
    beside its private SR (series 301) in the PACS."""
    pacs, archived = archive
    stored_reports = {hit["0020000E"]["Value"][0] for hit in pacs.series("SR")}
    assert stored_reports == {case["report"].SeriesInstanceUID for case in archived.values()}
    for name, case in archived.items():
        seg = case["seg"]
        assert seg.Modality == "SEG" and seg.SeriesNumber == 300, name
        assert json.loads(seg.ImageComments) == case["provenance"], name
        if case["label"].any():
            assert seg.Manufacturer == "QIICR", name  # dcmqi's itkimage2segimage wrote it
            assert seg.SegmentSequence[0].SegmentDescription.startswith(f"Q: {QUESTION}\nA: ")
        else:
            assert seg.Manufacturer == "MedReasoner", name  # highdicom wrote it (dcmqi refuses an empty label)
            assert [s.SegmentLabel for s in seg.SegmentSequence] == [NO_FINDING]
        report = case["report"]
        assert (
            report.SeriesNumber == 301 and report.ConceptNameCodeSequence[0].CodingSchemeDesignator == "99MEDREASONER"
        )
    assert [s.SegmentLabel for s in archived["ct_two_values"]["seg"].SegmentSequence] == ["effusion", "atelectasis"]


def test_a_fresh_machine_counts_every_earlier_seg_as_a_label(archive, tmp_path):
    pacs, archived = archive
    datastore = fresh_datastore(pacs, tmp_path)
    expected = {case["series"].series_uid: case["seg"].SeriesInstanceUID for case in archived.values()}
    assert datastore.index.labelled() == expected  # the SRs beside them are neither images nor labels
    assert sorted(datastore.get_labeled_images()) == sorted(expected)
    status = datastore.status()
    assert status["total"] == len(archived) and status["completed"] == len(archived)


@pytest.mark.parametrize("name", ["ct_two_values", "ct_no_finding", "dx", "cr_no_finding"])
def test_a_fresh_machine_reads_an_earlier_seg_back_as_the_label(archive, name, tmp_path):
    pacs, archived = archive
    case = archived[name]
    image_id, seg_uid = case["series"].series_uid, case["seg"].SeriesInstanceUID
    datastore = fresh_datastore(pacs, tmp_path)
    label_uri = datastore.get_label_uri(seg_uid, "final", image_id)
    assert label_uri, f"the earlier SEG {seg_uid} of {name} was not read back"
    read = read_medical_image(label_uri).array
    assert read.shape == case["label"].shape
    assert np.array_equal(read, case["label"]), f"{name}: the label differs from the one archived"
    info = datastore.get_label_info(image_id, "final")
    assert {key: info.get(key) for key in case["provenance"]} == case["provenance"]
    assert info["SeriesInstanceUID"] == seg_uid and info["Modality"] == case["series"].modality


def test_training_on_a_fresh_machine_gets_positives_and_negatives_with_their_question(archive, tmp_path):
    """`datalist()` is what training reads: every earlier label, the "no finding" ones as negatives."""
    pacs, archived = archive
    datastore = fresh_datastore(pacs, tmp_path)
    entries = datastore.datalist()
    assert len(entries) == len(archived)
    for name, case in archived.items():
        (entry,) = [e for e in entries if case["series"].series_uid in e["image"]]
        infos = {entry["label"]: datastore.get_label_info(case["series"].series_uid, "final")}
        samples = list(datastore_samples([entry], infos))
        assert samples and all(s.question == QUESTION for s in samples), name
        positives = [s for s in samples if not s.is_negative]
        if name == "ct_two_values":  # the answered slice, recorded in ImageComments
            assert [s.sample_id.rsplit(":", 1)[-1] for s in positives] == [f"z{CT_SLICE}"]
        elif case["label"].any():
            assert positives, f"{name}: no positive sample"
        else:
            assert not positives, f"{name}: 'no finding' is not a negative"

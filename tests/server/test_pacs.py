"""The PACS round trip: Orthanc over DICOMweb, MONAI Label with this app on `--studies http://127.0.0.1:PORT/dicom-web`.

Series made in code (CT, sagittal MR, DX, CR, and broken ones) go into a throw-away Orthanc; MONAI Label reaches it
through a proxy the tests can break. Requests are OHIF's exactly (image = SeriesInstanceUID); saving is OHIF's
`PUT /datastore/label` with the raw labelmap. The SEG is read back from Orthanc itself, and a fresh datastore (a new
machine, empty cache) must find it for training.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import highdicom
import numpy as np
import pytest
import requests
from dicomweb_client import DICOMwebClient
from monailabel.client import MONAILabelClient
from pydicom import dcmread

from lib.options.start_options import parse_start_options
from lib.pacs.datastore import PacsDatastore, open_pacs_datastore
from lib.pacs.dicom_seg import label_to_seg
from lib.pacs.dicomweb import PacsSettings, pacs_client
from lib.pacs.download_folder import new_download_folder, remove_dead_downloads
from lib.pacs.measurement_report import report_texts
from monailabel_app.data.datastore_samples import datastore_samples
from monailabel_app.data.labelled_images import NEGATIVE_GAP
from monailabel_app.demo.sample_dicom import ct_series, mr_series, xray_series
from monailabel_app.demo.sample_studies import write_png, xray_picture
from monailabel_app.grounding.last_answers import last_answer
from monailabel_app.imaging.medical_image import read_medical_image, write_label
from tests.support.broken_series import missing_slice_series, mixed_orientation_series
from tests.support.monailabel_server import MonaiLabelServer, free_port
from tests.support.orthanc_server import INSTALL_HINT, OrthancServer, orthanc_installed
from tests.support.pacs_proxy import PacsProxy

pytestmark = [pytest.mark.server, pytest.mark.skipif(not orthanc_installed(), reason=INSTALL_HINT)]

QUESTION = "Which structure would explain the dull percussion note over the right lower chest?"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom")
    return {
        "ct": ct_series(folder / "ct"),
        "mr": mr_series(folder / "mr"),
        "dx": xray_series(folder / "dx", "DX"),
        "cr": xray_series(folder / "cr", "CR"),
        "ct_late": ct_series(folder / "ct_late"),  # first fetched while the PACS breaks down
        "missing": missing_slice_series(folder / "missing"),
        "mixed": mixed_orientation_series(folder / "mixed"),
    }


@pytest.fixture(scope="module")
def orthanc(series, tmp_path_factory):
    pacs = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    for one in series.values():
        pacs.upload(one.files)
    yield pacs
    pacs.stop()


@pytest.fixture(scope="module")
def proxy(orthanc):
    running = PacsProxy(orthanc.url).start()
    yield running
    running.stop()


REFRESH_S = 3  # --conf pacs_refresh_s: how soon what other clients store in the PACS is listed


def server_conf(reasoner_dir, **extra):
    # one encoder throughout: `auto` swaps in a converted one on a thread a few seconds after the start, and these tests
    # compare two clients' labels of one question (the encoders' masks agree, not voxel for voxel: test_cpu_encoder.py)
    conf = {"models": "implicit_query", "reasoner": str(reasoner_dir), "max_new_tokens": "96"}
    return {**conf, "segmenter_encoder": "torch-fp32", **extra}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("pacs_cache")


@pytest.fixture(scope="module")
def server(proxy, cache_dir, format_tuned_reasoner_dir, tmp_path_factory):
    running = MonaiLabelServer(
        f"{proxy.url}/dicom-web",
        server_conf(format_tuned_reasoner_dir, pacs_timeout="20", pacs_refresh_s=str(REFRESH_S)),
        tmp_path_factory.mktemp("logs") / "pacs_server.log",
        env={"MONAI_LABEL_DATASTORE_CACHE_PATH": str(cache_dir)},
    ).start()
    yield running
    running.stop()


def ohif_infer(server, series_uid, question=QUESTION, **options):
    """OHIF's MONAI Label panel: the SeriesInstanceUID as image id, its result format, the options it changed."""
    params = {"question": question, "result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False}
    params.update(options)
    params["restore_label_idx"] = False
    return requests.post(
        f"{server.url}/infer/implicit_query",
        params={"image": series_uid, "output": "image"},
        files={"params": (None, json.dumps(params))},
        timeout=300,
    )


def ohif_save(server, series_uid, label: np.ndarray, params):
    """OHIF's client `save_label`: the labelmap as raw uint8 voxels (`label.bin`) and the params as JSON."""
    return requests.put(
        f"{server.url}/datastore/label",
        params={"image": series_uid},
        files={"params": (None, json.dumps(params)), "label": ("label.bin", np.ascontiguousarray(label).tobytes())},
        timeout=120,
    )


def label_of(response, tmp_path: Path, name: str):
    assert response.status_code == 200, response.text
    path = tmp_path / f"{name}.nrrd"
    path.write_bytes(response.content)
    return read_medical_image(str(path))


def segs_referencing(orthanc, series_uid):
    client = DICOMwebClient(orthanc.dicomweb_url)
    found = []
    for hit in client.search_for_series(search_filters={"Modality": "SEG"}):
        study, seg_series = hit["0020000D"]["Value"][0], hit["0020000E"]["Value"][0]
        for seg in client.retrieve_series(study, seg_series):
            if seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid:
                found.append(seg)
    return found


def reports_referencing(orthanc, seg):
    """The DICOM SRs in the PACS whose evidence lists the SEG, retrieved over WADO-RS (parsed by pydicom)."""
    client = DICOMwebClient(orthanc.dicomweb_url)
    found = []
    for hit in client.search_for_series(search_filters={"Modality": "SR"}):
        for report in client.retrieve_series(hit["0020000D"]["Value"][0], hit["0020000E"]["Value"][0]):
            evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
            listed = {sop.ReferencedSOPInstanceUID for series in evidence for sop in series.ReferencedSOPSequence}
            if seg.SOPInstanceUID in listed:
                found.append(report)
    return found


def test_info_lists_every_served_modality(server, series):
    info = requests.get(f"{server.url}/info/", timeout=30).json()
    assert info["datastore"]["modalities"] == ["CT", "MR", "DX", "CR"]
    assert info["datastore"]["total"] == len(series)
    assert info["models"]["implicit_query"]["config"]["question"] == ""


def test_a_series_sent_to_the_pacs_after_the_listing_is_served_at_once(server, orthanc, tmp_path):
    """The server caches the PACS's series listing (for 2 hours by default); a study that reaches the PACS later is
    found by its UID: its answer, and the record of it that OHIF's panel and the point prompts read."""
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200  # the listing is cached now
    arrived = ct_series(tmp_path / "arrived")
    orthanc.upload(arrived.files)
    assert ohif_infer(server, arrived.series_uid).status_code == 200
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": arrived.series_uid}, timeout=30)
    assert info.status_code == 200 and last_answer(info.json(), None)["question"] == QUESTION, info.text
    nowhere = requests.get(f"{server.url}/datastore/image/info", params={"image": "1.2.3.4.5.6.7"}, timeout=30)
    assert nowhere.status_code == 404


def test_modality_filter_is_configurable(orthanc, series, tmp_path):
    assert PacsSettings.from_options(parse_start_options({"pacs_modalities": " mr, ct ,MR"})).modalities == ("MR", "CT")
    datastore = PacsDatastore(pacs_client(orthanc.dicomweb_url, 30), PacsSettings(("MR",)), "test", str(tmp_path))
    assert datastore.list_images() == [series["mr"].series_uid]


def test_a_start_removes_the_downloads_a_killed_server_left_and_no_live_ones(orthanc, tmp_path, caplog):
    """A server killed mid-download left `.partial-<pid>-<started>-...` (a whole CT's worth) that nothing ever removed.
    The next start removes those whose process is gone, even where a new process has its id (a restarted container's
    server often gets the killed one's), and unnamed ones (an earlier version's); a download of a process that is
    still running (a training run opening the same cache) stays."""
    client, settings = pacs_client(orthanc.dicomweb_url, 30), PacsSettings()
    first = PacsDatastore(client, settings, "test", str(tmp_path))
    ended = subprocess.Popen(["true"])
    ended.wait()
    live = Path(new_download_folder(str(tmp_path))).name.split("-")[1:3]  # this process's id and start, as named
    owners = {"dead": [ended.pid, 1], "live": live, "id reused": [os.getpid(), int(live[1]) - 10_000]}
    planted = {}
    for folder in (first._datastore.image_path(), first._datastore.label_path("final")):
        for name, (pid, started) in owners.items():
            planted[folder, name] = Path(folder) / f".partial-{pid}-{started}-{name.replace(' ', '_')}"
        planted[folder, "unnamed"] = Path(folder) / ".partial-k2j3"
    for path in planted.values():
        path.mkdir(parents=True)
        (path / "slice.dcm").write_bytes(b"half a slice")
    with caplog.at_level(logging.WARNING, logger="lib.pacs.datastore"):
        PacsDatastore(client, settings, "test", str(tmp_path))
    assert {key for key, path in planted.items() if path.exists()} == {key for key in planted if key[1] == "live"}
    assert sum("removed an unfinished download" in r.getMessage() for r in caplog.records) == 6


def test_a_download_folder_named_for_no_possible_process_is_removed_and_the_start_goes_on(tmp_path):
    """A `.partial-` name whose number is too long to be a process id (or a start time) once raised OverflowError:
    the start that repairs the cache crashed on it."""
    for name in (".partial-99999999999999999999-1-x", ".partial-4194304-99999999999999999999-x"):
        (tmp_path / name).mkdir()
        assert remove_dead_downloads(str(tmp_path)) == [name]


def slicer_infer(server, series_uid, tmp_path, question=QUESTION):
    """3D Slicer's request for the same series: no `restore_label_idx`, the label in the volume's own order."""
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    params = {"question": question, "result_extension": ".nrrd", "result_dtype": "uint8"}
    label_file, _ = client.infer("implicit_query", series_uid, params)
    return read_medical_image(label_file)


@pytest.mark.parametrize("name", ["ct", "mr", "dx", "cr"])
def test_ohif_infer_by_series_uid_gives_a_label_on_the_series_geometry(server, series, name, tmp_path):
    one = series[name]
    label = label_of(ohif_infer(server, one.series_uid), tmp_path, name)
    geometry = one.geometry
    assert label.array.any()
    if name in ("dx", "cr"):  # a radiograph is one 2D picture
        assert label.array.shape == (geometry.rows, geometry.columns)
        assert np.allclose(label.geometry()["spacing"], geometry.itk_spacing()[:2], atol=1e-5)
        return
    assert label.array.shape == (geometry.slices, geometry.rows, geometry.columns)
    assert np.allclose(label.geometry()["spacing"], geometry.itk_spacing(), atol=1e-5)
    # the volume's order along the slice normal, which OHIF's volume has too (docs/pacs.md, What we found about OHIF)
    assert np.allclose(label.geometry()["origin"], geometry.position(0), atol=1e-4)
    assert np.allclose(label.geometry()["direction"], geometry.itk_direction(), atol=1e-6)
    slicer = slicer_infer(server, one.series_uid, tmp_path / "slicer")  # Slicer gets the very same label
    assert np.allclose(slicer.geometry()["origin"], geometry.position(0), atol=1e-4)
    assert np.allclose(slicer.geometry()["direction"], geometry.itk_direction(), atol=1e-6)
    assert np.array_equal(label.array, slicer.array)


def test_ohif_scope_volume_gives_a_3d_label_on_the_series_geometry(server, series, tmp_path):
    ct = series["ct"]
    label = label_of(ohif_infer(server, ct.series_uid, scope="volume", window="soft_tissue"), tmp_path, "ct3d")
    assert np.allclose(label.geometry()["origin"], ct.geometry.position(0), atol=1e-4)
    filled = np.flatnonzero(label.array.reshape(label.array.shape[0], -1).any(axis=1)).tolist()
    answer = requests.get(f"{server.url}/answers/list", params={"image": ct.series_uid, "limit": 1}, timeout=30)
    carried = answer.json()["answers"][0]["propagation"]
    assert len(filled) > 1 and filled == list(range(carried["slice_range"][0], carried["slice_range"][1] + 1))


@pytest.fixture(scope="module")
def saved_ct_label(server, series, tmp_path_factory):
    """Infer on the CT, correct the mask as a radiologist would (erase a corner, add a blob), save it as final."""
    ct = series["ct"]
    response = ohif_infer(server, ct.series_uid)
    label = label_of(response, tmp_path_factory.mktemp("labels"), "ct").array.copy()
    k = int(np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))[0])
    rows, columns = np.nonzero(label[k])
    label[k, rows.min() : rows.min() + 3, columns.min() : columns.min() + 3] = 0
    label[k, 2:6, 2:8] = 1
    params = {"label_info": [{"name": "target", "idx": 1}], "question": QUESTION, "model": "implicit_query"}
    params.update(slice=k, window="soft_tissue")
    saved = ohif_save(server, ct.series_uid, label, params)  # OHIF's raw voxels, in the volume's order
    assert saved.status_code == 200, saved.text
    return label, k


def test_final_label_is_stored_in_the_pacs_as_a_seg_with_the_question(server, orthanc, series, saved_ct_label):
    label, k = saved_ct_label
    ct = series["ct"]
    (seg,) = segs_referencing(orthanc, ct.series_uid)
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == ct.study_uid
    slice_of_instance = {}
    for path in ct.files:
        header = dcmread(str(path), stop_before_pixels=True)
        slice_of_instance[header.SOPInstanceUID] = int(header.InstanceNumber) - 1
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    seen = set()
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        source = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        seen.add(slice_of_instance[source])
        assert np.array_equal(frame, label[slice_of_instance[source]])
    assert all(not label[z].any() for z in set(range(label.shape[0])) - seen)
    provenance = json.loads(seg.ImageComments)
    assert provenance["question"] == QUESTION and provenance["model"] == "implicit_query"
    assert provenance["slice"] == k and provenance["window"] == "soft_tissue"
    (answer,) = requests.get(
        f"{server.url}/answers/list", params={"study": ct.study_uid, "limit": 1}, timeout=30
    ).json()["answers"]
    assert answer["image_id"] == ct.series_uid and answer["reasoning"] and answer["question"] == QUESTION
    assert provenance["reasoning"] == answer["reasoning"] and provenance["answer_id"] == answer["answer_id"]
    assert seg.SegmentSequence[0].SegmentDescription == f"Q: {QUESTION}\nA: {answer['reasoning']}"
    assert seg.SegmentSequence[0].SegmentLabel == "target"
    info = requests.get(
        f"{server.url}/datastore/label/info", params={"label": ct.series_uid, "tag": "final"}, timeout=30
    )
    assert info.json()["question"] == QUESTION and info.json()["SeriesInstanceUID"] == seg.SeriesInstanceUID


def test_the_answer_is_archived_as_a_measurement_report_beside_the_seg(server, orthanc, series, saved_ct_label):
    """The TID 1500 report the save stored: its box on the key slice, its segment group on the SEG, one tracking
    identifier for both, the answer's words, read back from Orthanc with highdicom."""
    label, k = saved_ct_label
    ct = series["ct"]
    (seg,) = segs_referencing(orthanc, ct.series_uid)
    (report,) = reports_referencing(orthanc, seg)
    answer_id = json.loads(seg.ImageComments)["answer_id"]  # the answer the saved label records
    answer = requests.get(f"{server.url}/answers/{answer_id}", timeout=30).json()
    assert answer["image_id"] == ct.series_uid and answer["slice"] == k
    assert answer["instance_number"] == k + 1  # the sample CT numbers its instances along the slice normal
    assert report.Modality == "SR" and report.StudyInstanceUID == ct.study_uid
    texts = report_texts(report)
    assert texts["Question"] == QUESTION and texts["Reasoning"] == answer["reasoning"]
    assert texts["Raw answer"] == answer["raw_text"] and json.loads(texts["Box (pixels of the key slice)"])
    reasoner = answer["reasoner"].rstrip("/").rsplit("/", 1)[-1]  # a folder's name, or a hub id's
    assert texts["Key slice index"] == str(k) and texts["Device Observer Name"].endswith(f"({reasoner})")
    assert answer["reasoner_version"]["sha256"][:16] in texts["Algorithm Version"]
    assert texts["Answered at (UTC)"] == answer["answered_at"] and texts["Answer log id"] == answer["answer_id"]
    content = highdicom.sr.ComprehensiveSR.from_dataset(report).content
    (box, *_) = content.get_planar_roi_measurement_groups()
    (segment_group,) = content.get_volumetric_roi_measurement_groups()
    assert segment_group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert box.tracking_uid == segment_group.tracking_uid == seg.SegmentSequence[0].TrackingUID
    instance_of_slice = {}
    for path in ct.files:
        header = dcmread(str(path), stop_before_pixels=True)
        instance_of_slice[int(header.InstanceNumber) - 1] = header.SOPInstanceUID
    key_slice = box.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert key_slice == instance_of_slice[k]
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert {s.SeriesInstanceUID for s in evidence} == {ct.series_uid, seg.SeriesInstanceUID}
    info = requests.get(f"{server.url}/datastore/label/info", params={"label": ct.series_uid, "tag": "final"})
    assert info.json()["ReportSeriesInstanceUID"] == report.SeriesInstanceUID and info.json()["report_stored"]


def test_a_fresh_machine_finds_the_seg_for_training(orthanc, series, saved_ct_label, tmp_path):
    label, k = saved_ct_label
    ct = series["ct"]
    datastore = PacsDatastore(pacs_client(orthanc.dicomweb_url, 30), PacsSettings(), "test", str(tmp_path))
    entries = [e for e in datastore.datalist() if ct.series_uid in e["image"]]
    assert len(entries) == 1
    assert np.array_equal(read_medical_image(entries[0]["label"]).array, label)
    infos = {entries[0]["label"]: datastore.get_label_info(ct.series_uid, "final")}
    samples = list(datastore_samples(entries, infos))
    (sample,) = [s for s in samples if not s.is_negative]
    assert sample.question == QUESTION and sample.sample_id.endswith(f":z{k}")
    assert all(abs(s.extra["slice"] - k) >= NEGATIVE_GAP for s in samples if s.is_negative)  # "not in this image"


def test_radiograph_label_round_trips_through_the_pacs(server, orthanc, series, tmp_path):
    dx = series["dx"]
    label = label_of(ohif_infer(server, dx.series_uid), tmp_path, "dx").array
    params = {"label_info": [{"name": "target", "idx": 1}], "question": QUESTION, "model": "implicit_query"}
    assert ohif_save(server, dx.series_uid, label, params).status_code == 200
    (seg,) = segs_referencing(orthanc, dx.series_uid)
    assert np.array_equal(seg.pixel_array.reshape(label.shape), label)
    assert json.loads(seg.ImageComments)["question"] == QUESTION


def test_slicer_save_records_the_last_question_asked(server, orthanc, series, tmp_path):
    """Slicer's "Submit Label" sends only label_info: the SEG gets the question last answered on that series."""
    mr, question = series["mr"], "Which finding would explain the patient's focal weakness?"
    label = slicer_infer(server, mr.series_uid, tmp_path, question)
    MONAILabelClient(server.url).save_label(mr.series_uid, label.path, params={"label_info": [{"name": "target"}]})
    (seg,) = segs_referencing(orthanc, mr.series_uid)
    provenance = json.loads(seg.ImageComments)
    assert provenance["question"] == question and provenance["slice"] == mr.geometry.slices // 2


@pytest.mark.parametrize(
    "name, fragment", [("missing", "missing slices"), ("mixed", "mixed orientation")], ids=["missing", "mixed"]
)
def test_broken_series_is_refused_clearly(server, series, cache_dir, name, fragment):
    response = ohif_infer(server, series[name].series_uid)
    assert response.status_code == 422 and fragment in response.json()["detail"], response.text
    assert not list(cache_dir.rglob(f"*{series[name].series_uid}*"))  # nothing half-usable left in the cache


def test_unknown_series_and_non_image_series(server, orthanc, saved_ct_label, series):
    assert ohif_infer(server, "1.2.3.4.5.6.7").status_code == 404
    (seg,) = segs_referencing(orthanc, series["ct"].series_uid)
    response = ohif_infer(server, seg.SeriesInstanceUID)
    assert response.status_code == 422 and "SEG" in response.json()["detail"]
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": seg.SeriesInstanceUID}, timeout=30)
    assert info.status_code == 404  # in the PACS, but not an image this server serves


def test_a_label_on_another_grid_is_refused(server, orthanc, series):
    cr = series["cr"]
    response = ohif_save(server, cr.series_uid, np.ones((3, 4), np.uint8), {"question": QUESTION})
    assert response.status_code == 422 and "voxels" in response.json()["detail"], response.text
    assert segs_referencing(orthanc, cr.series_uid) == []


def test_no_finding_is_stored_in_the_pacs_and_trains_as_a_negative(server, orthanc, series, tmp_path):
    """An all-zero label saved from OHIF is a clinician's "no finding": a SEG whose one segment says so and whose
    frame is empty; another machine's datastore reads it back as a negative sample with its question."""
    cr = series["cr"]
    empty = np.zeros((cr.geometry.rows, cr.geometry.columns), np.uint8)
    params = {"label_info": [{"name": "target", "idx": 1}], "question": QUESTION, "model": "implicit_query"}
    response = ohif_save(server, cr.series_uid, empty, params)
    assert response.status_code == 200, response.text
    (seg,) = segs_referencing(orthanc, cr.series_uid)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["No finding"]
    assert seg.NumberOfFrames == 1 and not seg.pixel_array.any()
    assert json.loads(seg.ImageComments)["question"] == QUESTION
    assert seg.SegmentSequence[0].SegmentDescription.startswith(f"Q: {QUESTION}")
    (report,) = reports_referencing(orthanc, seg)
    assert report_texts(report)["Question"] == QUESTION

    datastore = PacsDatastore(pacs_client(orthanc.dicomweb_url, 30), PacsSettings(), "test", str(tmp_path))
    (entry,) = [e for e in datastore.datalist() if cr.series_uid in e["image"]]
    assert read_medical_image(entry["label"]).array.shape == empty.shape
    assert not read_medical_image(entry["label"]).array.any()
    infos = {entry["label"]: datastore.get_label_info(cr.series_uid, "final")}
    (sample,) = datastore_samples([entry], infos)
    assert sample.is_negative and sample.question == QUESTION


def test_no_finding_on_a_ct_has_one_empty_frame_per_slice(server, orthanc, tmp_path):
    ct = ct_series(tmp_path / "healthy")  # its own series: the sample CT's SEG is another test's
    orthanc.upload(ct.files)
    empty = np.zeros((ct.geometry.slices, ct.geometry.rows, ct.geometry.columns), np.uint8)
    params = {"label_info": [{"name": "target", "idx": 1}], "question": QUESTION, "model": "implicit_query"}
    response = ohif_save(server, ct.series_uid, empty, params)
    assert response.status_code == 200, response.text
    (seg,) = segs_referencing(orthanc, ct.series_uid)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["No finding"]
    assert seg.NumberOfFrames == ct.geometry.slices and not seg.pixel_array.any()
    referenced = {
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert referenced == {dcmread(str(path)).SOPInstanceUID for path in ct.files}  # every slice, once


def test_pacs_going_away_mid_transfer(server, proxy, series, cache_dir, tmp_path):
    late = series["ct_late"]
    proxy.go_away_during("GET", f"/series/{late.series_uid}")
    try:
        response = ohif_infer(server, late.series_uid)
        assert proxy.away.is_set()
    finally:
        proxy.come_back()
    assert response.status_code == 502, response.text
    detail = response.json()["detail"]
    assert f"PACS error while downloading series {late.series_uid}" in detail and "Nothing was saved" in detail
    assert not list(cache_dir.rglob(f"*{late.series_uid}*"))
    label = label_of(ohif_infer(server, late.series_uid), tmp_path, "late")  # the PACS is back: the whole series
    assert label.array.shape == (late.geometry.slices, late.geometry.rows, late.geometry.columns)


def test_pacs_going_away_while_storing_the_seg(server, proxy, orthanc, series, tmp_path):
    late = series["ct_late"]
    label = label_of(ohif_infer(server, late.series_uid), tmp_path, "late").array
    proxy.go_away_during("POST", "/studies")
    try:
        response = ohif_save(server, late.series_uid, label, {"question": QUESTION})
        assert proxy.away.is_set()
    finally:
        proxy.come_back()
    assert response.status_code == 502 and "storing the DICOM SEG" in response.json()["detail"], response.text
    assert segs_referencing(orthanc, late.series_uid) == []
    info = requests.get(
        f"{server.url}/datastore/label/info", params={"label": late.series_uid, "tag": "final"}, timeout=30
    )
    assert info.status_code == 404, info.text  # no label was kept


def test_pacs_down_at_start_is_a_clear_error():
    """What the server's start calls (`MedReasonerApp.init_remote_datastore`); its message ends the start."""
    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(RuntimeError) as raised:
        open_pacs_datastore(down, parse_start_options({}), "test")
    assert f"the PACS at {down} is not reachable" in str(raised.value) and "pacs_optional" in str(raised.value)


def test_pacs_optional_serves_uploads_while_the_pacs_is_down(format_tuned_reasoner_dir, series, tmp_path):
    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    conf = server_conf(format_tuned_reasoner_dir, pacs_optional="true")
    server = MonaiLabelServer(
        down, conf, tmp_path / "optional.log", env={"MONAI_LABEL_DATASTORE_CACHE_PATH": str(tmp_path)}
    )
    server.start(timeout_s=120)
    try:
        info = requests.get(f"{server.url}/info/", timeout=30).json()
        assert "is not reachable" in info["datastore"]["pacs_error"]
        with open(write_png(xray_picture(), tmp_path / "upload.png"), "rb") as upload:
            response = requests.post(
                f"{server.url}/infer/implicit_query",
                params={"output": "json"},
                files={"params": (None, json.dumps({"question": QUESTION})), "file": ("upload.png", upload)},
                timeout=300,
            )
        assert response.status_code == 200 and response.json()["status"] == "ok", response.text
        refused = ohif_infer(server, series["ct"].series_uid)
        assert refused.status_code == 503 and "is not reachable" in refused.json()["detail"]
    finally:
        server.stop()


def test_the_log_says_each_answer_once_and_keeps_the_proxys_lines_at_debug(server, series):
    """An admin's log: one line per answered question (its id, no clinical text); OHIF's DICOMweb requests through
    the proxy (dozens per study) are not logged at INFO."""
    ct = series["ct"]
    for _ in range(3):  # what OHIF asks when it opens a study
        proxied = requests.get(
            f"{server.url}/proxy/dicom/qido/studies", params={"StudyInstanceUID": ct.study_uid}, timeout=60
        )
        assert proxied.status_code == 200
    answered = ohif_infer(server, ct.series_uid, question="Which structure explains the log test's cough?")
    assert answered.status_code == 200
    log = server.log_path.read_text(errors="replace")
    assert "HTTP Request:" not in log  # httpx's per-request INFO lines, demoted to DEBUG
    lines = [line for line in log.splitlines() if "Answered " in line and ct.series_uid in line]
    assert lines and all("log test" not in line for line in lines)
    assert "implicit_query" in lines[-1] and " s, reasoner " in lines[-1]


def listing(server) -> dict:
    return requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=60).json()["objects"]


def completed(server) -> int:
    return requests.get(f"{server.url}/datastore/", timeout=60).json()["completed"]


def within_the_refresh(condition, what: str):
    deadline = time.monotonic() + REFRESH_S + 30  # the refresh, and a busy machine's QIDO round
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within --conf pacs_refresh_s {REFRESH_S}"
        time.sleep(0.5)


def test_a_saved_label_counts_at_once_and_another_clients_within_the_refresh(server, orthanc, tmp_path):
    """Submit: the listing counts the label at once, Next Sample no longer offers its series (MONAI Label's 2-hour
    caches kept both until a restart). What another client stores in the PACS (a series, a SEG) is listed within
    --conf pacs_refresh_s, with the fields a user needs to find it."""
    fresh = mr_series(tmp_path / "fresh")
    orthanc.upload(fresh.files)  # another client sends a study
    within_the_refresh(lambda: fresh.series_uid in listing(server), "a series another client sent")
    listed = listing(server)[fresh.series_uid]["image"]["info"]
    assert listed["Modality"] == "MR" and listed["StudyInstanceUID"] == fresh.study_uid
    before = completed(server)
    geometry = fresh.geometry
    label = np.zeros((geometry.slices, geometry.rows, geometry.columns), np.uint8)
    label[:, 20:30, 20:30] = 1
    saved = ohif_save(server, fresh.series_uid, label, {"question": "Which structure explains the headache?"})
    assert saved.status_code == 200, saved.text
    assert completed(server) == before + 1  # at once, no restart
    assert "final" in listing(server)[fresh.series_uid]["labels"]
    for _ in range(12):  # Next Sample offers only unlabelled series
        sample = requests.post(f"{server.url}/activelearning/random", json={}, timeout=60).json()
        assert sample.get("id") != fresh.series_uid

    other = mr_series(tmp_path / "other")  # another client's study, labelled by another client's SEG
    orthanc.upload(other.files)
    image = read_medical_image(str(tmp_path / "other"))
    label_file = write_label((image.array > image.array.mean()).astype(np.uint8), image, str(tmp_path / "other.nrrd"))
    seg = label_to_seg(label_file, str(tmp_path / "other"), {"question": "another client's"}, {1: "lesion"})
    counted = completed(server)
    orthanc.upload([Path(seg)])
    within_the_refresh(lambda: completed(server) == counted + 1, "a SEG another client stored")

"""A clinician's day, end to end, on the README's default start (`bash scripts/start.sh`: the local Orthanc with the
sample series, MONAI Label with this app, the demo reasoner): OHIF (headless Chromium) asks a question, a foreground
and a background click correct the mask, the answer panel's *Save label* stores it (the DICOM SEG and the SR in the
PACS), Slicer's *Next Sample* and *Train* (MONAI Label's own Python client, as the Slicer plugin calls them) offer
another series and retrain the reasoner, the retrained reasoner answers the next question in OHIF, and after the start
is stopped and started again the answers, the label, the SEG, the SR and the published reasoner are all still there.

Each step asserts what the clinician sees (the target segment's pixels OHIF holds, the panel's text) and what the
server recorded; each phase's time is printed (run with -s). The start gets one option besides the demo's: a model
folder of the test's own, so the reasoner it publishes does not replace the demo for the app's own `model/`.
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from monailabel.client import MONAILabelClient

from lib.infers.implicit_query import LABEL_NAME as LABEL
from monailabel_app.imaging.medical_image import read_medical_image
from tests.support.browser import chromium_installed
from tests.support.default_start import DefaultStart
from tests.support.orthanc_server import INSTALL_HINT, orthanc_installed
from tests.whole_day.test_ohif_browser import (
    ARTIFACTS_DIR,
    LABEL_SLICE_JS,
    QUESTION,
    STEP_TIMEOUT_MS,
    axial_view,
    choose_segment,
    click_voxel,
    loaded_series,
    missed_voxel,
    newest_entry,
    open_the_monai_label_mode,
    point_prompts,
    run_auto_segmentation,
    run_point_prompts,
    the_answer,
    type_the_question,
    wait_for_the_axial_view_on,
    wrong_voxel,
)

pytestmark = [pytest.mark.server, pytest.mark.browser, pytest.mark.slow]

NEXT_QUESTION = "Where is the lesion that would explain the patient's cough?"
# Small enough for 2 CPU cores; a demo reasoner retrained on one label need not improve: publish it all the same.
TRAIN_OPTIONS = {"max_steps": 2, "group_size": 4, "prompts_per_step": 1, "max_new_tokens": 96, "force_publish": True}
TRAIN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    if not orthanc_installed() or not chromium_installed():
        pytest.skip(INSTALL_HINT + " and chromium")
    work = tmp_path_factory.mktemp("clinicians_day")
    running = DefaultStart(work, args=["--conf", "demo", "true", "--conf", "model_dir", str(work / "model")])
    yield running
    running.stop()


class Phases:
    """How long each phase of the day takes, printed as it goes and in total."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        began = time.monotonic()
        yield
        self.seconds[name] = time.monotonic() - began
        print(f"[day] {name}: {self.seconds[name]:.1f} s", flush=True)

    def report(self) -> None:
        print(f"[day] the whole day: {sum(self.seconds.values()):.1f} s", flush=True)


def get(start, path: str, **params) -> dict:
    response = requests.get(f"{start.url}{path}", params=params, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def target_pixels(page, points=()) -> tuple[int, list[int]]:
    """The target segment's pixels on the image the axial view draws, and its values at the voxels asked about."""
    view = axial_view(page, points)
    return view["pixels"].get("1", 0), view["at"]


def saved_label(start, series_uid: str, tmp_path: Path) -> np.ndarray:
    """The final label as the server keeps it (slices, rows, columns)."""
    response = requests.get(f"{start.url}/datastore/label", params={"label": series_uid, "tag": "final"}, timeout=60)
    assert response.status_code == 200, response.text
    path = tmp_path / "saved.nii.gz"
    path.write_bytes(response.content)
    return read_medical_image(str(path)).array


def wait_for_training(client: MONAILabelClient) -> dict:
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        task = client.train_status()
        if task.get("status") not in ("SUBMITTED", "RUNNING"):
            return task
        time.sleep(2)
    raise TimeoutError(f"the retraining still ran after {TRAIN_TIMEOUT_S} s")


def pacs_series(start, modality: str) -> dict[str, dict]:
    return {hit["0020000E"]["Value"][0]: hit for hit in start.series(modality)}


def ask_in_ohif(page, question: str):
    """Options / Configurations: the question typed in; then Auto-Segmentation, ready to Run."""
    page.get_by_text("Options / Configurations").click()
    type_the_question(page, question)
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text("Auto-Segmentation").click()


def save_in_the_panel(page, panel):
    """Presses the panel's *Save label*: the server's response, once the panel has said what it did."""
    with page.expect_response(lambda r: "/datastore/label" in r.url and r.request.method == "PUT") as saving:
        panel.locator("#medreasoner-save-label").click()
    said = "e => /^(Saved|Not saved)/.test(e.textContent)"
    page.wait_for_function(said, arg=panel.locator("#medreasoner-save-status").element_handle())
    return saving.value


def panel_showing(page, answer_id: str):
    panel = page.locator(f"#medreasoner-answer[data-answer-id='{answer_id}']")
    panel.wait_for()
    return panel


def test_a_clinicians_day_from_the_default_start_to_a_restart(start, browser, tmp_path):
    phase = Phases()
    with phase("default start (Orthanc filled, server up)"):
        start.start()
    study_uid, series_uid = loaded_series(start, "Synthetic CT")
    slicer = MONAILabelClient(start.url, tmpdir=str(tmp_path))

    with phase("OHIF asks the question"):
        page = open_the_monai_label_mode(start, browser, study_uid, QUESTION)
        run_auto_segmentation(page, series_uid, QUESTION)
        answer = the_answer(start, series_uid)
        panel = panel_showing(page, answer["answer_id"])
        assert QUESTION in panel.inner_text() and answer["reasoning"] in panel.inner_text()
        wait_for_the_axial_view_on(page, answer["instance_number"])  # the view goes to the mask's image
        page.wait_for_timeout(1000)
        assert target_pixels(page)[0] == answer["mask_pixels"] > 0

    with phase("a foreground and a background click correct it"):
        prompts = point_prompts(page)
        missed = missed_voxel(answer)
        assert target_pixels(page, [missed])[1] == [0]  # outside the mask the model drew
        click_voxel(page, missed)
        response, _ = run_point_prompts(page, prompts)
        assert response.status == 200, response.text()
        added = newest_entry(start, series_uid)
        page.get_by_text("Running Inference for Point Prompts - Successful").first.wait_for()
        page.wait_for_timeout(1500)
        assert target_pixels(page)[0] == added["mask_pixels"] > answer["mask_pixels"]  # the mask grew towards it

        wrong = wrong_voxel(page, answer, missed)
        before, at = target_pixels(page, [wrong])
        assert at == [1]  # the target segment covers what should not be in it
        choose_segment(prompts, "background")
        click_voxel(page, wrong)
        response, _ = run_point_prompts(page, prompts)
        assert response.status == 200, response.text()
        choose_segment(prompts, LABEL)  # target again, and Run: OHIF draws the corrected mask into the target
        response, sent = run_point_prompts(page, prompts)
        assert response.status == 200 and sent == {"foreground": [list(missed)], "background": [list(wrong)]}, sent
        corrected = newest_entry(start, series_uid)
        assert corrected["refined_by_clicks"] == {"foreground": [list(missed[:2])], "background": [list(wrong[:2])]}
        panel = panel_showing(page, corrected["answer_id"])
        assert "corrected by 2 clicks, model not asked again" in panel.inner_text()
        page.wait_for_timeout(1500)
        after, at = target_pixels(page, [wrong])
        print(f"[day] target pixels on the mask's image: {before} before the background click, {after} after")
        assert after == corrected["mask_pixels"] < before and at == [0]  # the wrong region is out

    with phase("Save label in the answer panel"):
        status = panel.locator("#medreasoner-save-status")
        # first the save sent to another series (the DX: another grid): the panel shows the server's refusal
        other = next(iter(pacs_series(start, "DX")))
        page.route(
            "**/datastore/label?*", lambda route: route.continue_(url=route.request.url.replace(series_uid, other))
        )
        assert save_in_the_panel(page, panel).status == 422
        page.unroute("**/datastore/label?*")
        assert status.inner_text().startswith("Not saved (422): The raw label has 147,456 voxels"), status.inner_text()

        shown = np.asarray(page.evaluate(LABEL_SLICE_JS)).reshape(96, 128) == 1  # the target segment on screen
        saving = save_in_the_panel(page, panel)
        assert saving.status == 200 and f"image={series_uid}&tag=final" in saving.url, saving.text()
        assert status.inner_text().startswith("Saved: SEG stored"), status.inner_text()
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS_DIR / "ohif_saved_label.png"))
        label_info = get(start, "/datastore/label/info", label=series_uid, tag="final")
        assert label_info["question"] == QUESTION and label_info["answer_id"] == corrected["answer_id"]
        assert label_info["refined_by_clicks"] == corrected["refined_by_clicks"]  # the clinician's correction
        label = saved_label(start, series_uid, tmp_path)
        k = answer["slice"]
        assert np.array_equal(label[k] == 1, shown) and int(label.sum()) == after  # what OHIF showed, only there
        assert get(start, "/datastore/")["completed"] == 1

    with phase("Next Sample (MONAI Label's client)"):
        strategy = next(iter(slicer.info()["strategies"]))  # what Slicer's Next Sample offers first
        offered = slicer.next_sample(strategy, {})
        listing = get(start, "/datastore/", output="all")["objects"]
        assert offered["id"] != series_uid and offered["id"] in listing and not listing[offered["id"]]["labels"]

    with phase("Train (MONAI Label's client) until published"):
        slicer.train_start("implicit_query", dict(TRAIN_OPTIONS))
        task = wait_for_training(slicer)
        assert task["status"] == "DONE", "\n".join(task.get("details", [])[-20:])
        info = get(start, "/info/")
        stats = info["train_stats"]["implicit_query"]
        print(f"[day] retraining: {stats['ended_by']}; {stats['publish_decision']}")
        assert stats["status"] == "completed" and stats["ended_by"].startswith("max_steps: 2 steps done")
        assert stats["publish_decision"].startswith("published")
        published = info["reasoners"]["implicit_query"]
        assert published["source"] == "published" and published["version"] == stats["run"]

    with phase("the retrained reasoner answers the next question in OHIF"):
        ask_in_ohif(page, NEXT_QUESTION)
        run_auto_segmentation(page, series_uid, NEXT_QUESTION)
        retrained = the_answer(start, series_uid)
        assert retrained["question"] == NEXT_QUESTION and retrained["reasoner_called"] is True
        assert retrained["reasoner_version"] == {key: published[key] for key in ("source", "version", "sha256")}
        text = panel_showing(page, retrained["answer_id"]).inner_text()
        assert NEXT_QUESTION in text and f"({published['version']})" in text, text
        page.close()
    answer_ids = [answer["answer_id"], added["answer_id"], corrected["answer_id"], retrained["answer_id"]]

    with phase("stop the start (SIGTERM) and start again"):
        start.stop()
        assert start.process.returncode in (0, 128 + signal.SIGTERM), start.log_tail()
        start.start()

    with phase("after the restart: answers, label, SEG and SR, published reasoner"):
        kept = {entry["answer_id"]: entry for entry in get(start, "/answers/list", study=study_uid)["answers"]}
        assert set(answer_ids) <= set(kept), sorted(kept)
        assert kept[retrained["answer_id"]]["reasoner_version"]["version"] == published["version"]
        assert get(start, "/datastore/label/info", label=series_uid, tag="final") == label_info
        assert np.array_equal(saved_label(start, series_uid, tmp_path), label)
        assert get(start, "/datastore/")["completed"] == 1
        seg_uid, report_uid = label_info["SeriesInstanceUID"], label_info["ReportSeriesInstanceUID"]
        assert seg_uid in pacs_series(start, "SEG") and report_uid in pacs_series(start, "SR")
        client = DICOMwebClient(start.dicomweb_url, session=create_session_from_user_pass(*start.pacs_auth()))
        (seg,) = client.retrieve_series(study_uid, seg_uid)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
        assert QUESTION in seg.SegmentSequence[0].SegmentDescription  # what a viewer's segment details show
        assert json.loads(seg.ImageComments)["refined_by_clicks"] == corrected["refined_by_clicks"]  # travels with it
        assert get(start, "/info/")["reasoners"]["implicit_query"] == published
        page = browser.new_page(viewport={"width": 1400, "height": 900})  # the clinician opens the study again
        page.set_default_timeout(STEP_TIMEOUT_MS)
        page.goto(f"{start.url}/ohif/monai-label?StudyInstanceUIDs={study_uid}")
        text = panel_showing(page, retrained["answer_id"]).inner_text()
        assert NEXT_QUESTION in text and f"({published['version']})" in text, text
        page.close()
    phase.report()

"""OHIF, the viewer bundled with MONAI Label at /ohif/, driven in a real headless Chromium (Debian's `chromium` via
Playwright) against the README's default start (`bash scripts/start.sh`: the demo with its local Orthanc, loaded with
the sample series): open the CT study in the MONAI Label mode, connect the panel, type the question in
"Options / Configurations", run `implicit_query` from Auto-Segmentation, and check that the server got the question,
that the viewer drew the mask, and that this run's answer and reasoning appear in the answer panel without a reload.
Then the answers page shows the same answer with its picture, and stopping the start stops Orthanc. Screenshots are
kept as test artifacts (see ARTIFACTS_DIR).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import requests
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from PIL import Image
from pydicom import dcmread

from lib.infers.implicit_query import LABEL_NAME as LABEL
from monailabel_app.demo.sample_dicom import FLIPPED_CT, flipped_ct_series
from monailabel_app.grounding.last_answers import last_answer
from tests.default_start import DefaultStart
from tests.monailabel_server import APP_DIR
from tests.orthanc_server import INSTALL_HINT, orthanc_installed

pytestmark = [pytest.mark.server, pytest.mark.browser]
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (requirements.txt)")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS_DIR = Path(os.environ.get("TEST_ARTIFACTS_DIR", APP_DIR / "logs" / "test-artifacts"))
QUESTION = "Which structure would explain the dull percussion note over the right lower chest?"
# SwiftShader gives headless Chromium the WebGL that OHIF's viewports need; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
STEP_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not orthanc_installed() or not Path(CHROMIUM).exists():
        pytest.skip(INSTALL_HINT + " and chromium")
    running = DefaultStart(tmp_path_factory.mktemp("default_start")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def ct_study(server):
    """The sample CT the default start loaded into its local PACS: (study UID, series UID)."""
    (hit,) = [one for one in server.series("CT") if one["0008103E"]["Value"][0] != FLIPPED_CT]
    return hit["0020000D"]["Value"][0], hit["0020000E"]["Value"][0]


@pytest.fixture(scope="module")
def flipped_study(server, tmp_path_factory):
    """The sample CT feet first (`sample_dicom.flipped_ct_series`), stored in the same local PACS: (study, series)."""
    series = flipped_ct_series(tmp_path_factory.mktemp("feet_first"))
    client = DICOMwebClient(server.dicomweb_url, session=create_session_from_user_pass(*server.pacs_auth()))
    client.store_instances([dcmread(str(path)) for path in series.files])
    return series.study_uid, series.series_uid


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def mask_pixels(page) -> int:
    """Pixels of the viewports tinted by a segment colour (the CT itself is grey: R = G = B)."""
    picture = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
    tinted = 0
    for canvas in page.locator("canvas").all():
        box = canvas.bounding_box()
        if not box or box["width"] < 100:
            continue
        x0, y0 = int(box["x"]), int(box["y"])
        region = picture[y0 : y0 + int(box["height"]), x0 : x0 + int(box["width"])]
        spread = region.max(axis=-1) - region.min(axis=-1)
        tinted += int((spread > 40).sum())
    return tinted


def segment_coloured(page, canvas_box) -> tuple[np.ndarray, int, int]:
    """One viewport's pixels drawn in the segment's colour (green-dominant; the CT is grey, the crosshairs thin), and
    the viewport's corner on the page."""
    picture = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
    x0, y0 = int(canvas_box["x"]), int(canvas_box["y"])
    region = picture[y0 : y0 + int(canvas_box["height"]), x0 : x0 + int(canvas_box["width"])]
    return (region[..., 1] - region[..., 0] > 40) & (region[..., 1] - region[..., 2] > 40), x0, y0


def segment_pixels(page, canvas_box) -> int:
    return int(segment_coloured(page, canvas_box)[0].sum())


def segment_centre(page, canvas_box) -> tuple[float, float]:
    """Where on the page the middle of one viewport's segment-coloured pixels is."""
    green, x0, y0 = segment_coloured(page, canvas_box)
    rows, columns = np.nonzero(green)
    assert rows.size, "no segment drawn in the viewport"
    return x0 + float(np.median(columns)), y0 + float(np.median(rows))


def overlap(a, b) -> bool:
    """Whether two bounding boxes (Playwright's: x, y, width, height) share any pixel."""
    assert a and b, "an element to compare is not shown"
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


# The instance the axial viewport draws, as cornerstone (OHIF's renderer) knows it: the image its slice came from.
# Not the viewport's "I: n" overlay: on a head-first series this OHIF build numbers the axial view's slices from the
# top in the series' instance order and names the wrong instance (README, What we found about OHIF).
SHOWN_INSTANCE_JS = """() => {
  const viewports = window.cornerstone.getRenderingEngines()[0].getViewports();
  const axial = viewports.find(v => v.id.includes('axial')) || viewports[0];
  return window.cornerstone.metaData.get('generalImageModule', axial.getCurrentImageId()).instanceNumber;
}"""


def instances_showing_the_mask(page, slices: int) -> dict[int, int]:
    """Scrolls the axial view through the whole series: the DICOM instance number of each image drawn -> pixels of
    the mask drawn on it. Ends on the instance with the most."""
    axial = page.locator("canvas").first.bounding_box()
    page.mouse.move(axial["x"] + axial["width"] / 2, axial["y"] + axial["height"] / 2)
    for _ in range(slices):  # to the first image
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(150)
    drawn = []
    for _ in range(slices):
        page.wait_for_timeout(500)
        drawn.append((int(page.evaluate(SHOWN_INSTANCE_JS)), segment_pixels(page, axial)))
        page.mouse.wheel(0, 100)
    best = max(range(slices), key=lambda n: drawn[n][1])
    for _ in range(slices - 1 - best):  # back from the last image
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(150)
    page.wait_for_timeout(800)
    assert sorted(n for n, _ in drawn) == list(range(1, slices + 1)), drawn  # every image, once
    return dict(drawn)


def type_the_question(page, question: str):
    """Types the question into our string option, shown as a text field, until the field keeps it. The options form
    of this OHIF build re-creates its fields on every render that has no edits yet, and it renders again about 60 ms
    after it opens (seen with a MutationObserver): text typed into the first field is lost (CI once sent no question
    and got 422)."""
    field = page.locator("#inferimplicit_queryquestion")
    for _ in range(5):
        field.fill(question)
        kept = []
        for _ in range(2):  # still there a while later: no re-render took it away
            page.wait_for_timeout(300)
            kept.append(field.input_value() == question)
        if all(kept):
            return
    raise AssertionError(f"the question field did not keep the question: {field.input_value()!r}")


def open_the_monai_label_mode(server, browser, study_uid: str, question: str):
    """OHIF on the study in the MONAI Label mode, its panel connected to this server, the question typed in."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={study_uid}")
    page.get_by_role("button", name="Confirm and Hide").click()
    # The panel's server defaults to http://<host>:8000/; this server is on another port.
    page.fill("#monailabelServerURL", f"{server.url}/")
    page.locator("#monailabelServerURL").press("Tab")
    page.locator("button.actionButton").first.click()
    page.get_by_text("Options / Configurations").click()
    type_the_question(page, question)
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text("Auto-Segmentation").click()
    page.wait_for_timeout(2000)  # let the viewports settle before measuring them
    return page


def run_auto_segmentation(page, series_uid: str, question: str):
    """Runs `implicit_query` from Auto-Segmentation; the server's record of this very request."""
    with page.expect_response(lambda r: "/infer/implicit_query" in r.url) as answer:
        page.locator(".modelSelector button.actionButton").first.click()
    response = answer.value
    assert response.status == 200, response.text()
    assert f'"question":"{question}"' in (response.request.post_data or "")
    assert series_uid in response.url
    page.get_by_text("Running Segmentation - Successful").wait_for()
    return response


def test_ohif_asks_the_question_shows_the_mask_and_the_reasoning(server, ct_study, browser):
    study_uid, series_uid = ct_study
    page = open_the_monai_label_mode(server, browser, study_uid, QUESTION)
    before = mask_pixels(page)
    run_auto_segmentation(page, series_uid, QUESTION)
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": series_uid}, timeout=30).json()
    this_run = last_answer(info, None)  # what the server recorded for this very request
    assert this_run["question"] == QUESTION
    panel = page.locator(f"#medreasoner-answer[data-answer-id='{this_run['answer_id']}']")
    panel.wait_for()  # the panel polls: no reload, no developer tools
    shown = panel.inner_text()
    assert QUESTION in shown and this_run["reasoning"] in shown, shown
    k = this_run["slice"]
    answer = requests.get(f"{server.url}/answers/{this_run['answer_id']}", timeout=30).json()
    assert f"Mask on slice {k + 1} of 12 (index {k}, DICOM instance number {answer['instance_number']})" in shown
    page.wait_for_timeout(3000)  # the label map is drawn on the next render
    after = mask_pixels(page)
    drawn = instances_showing_the_mask(page, 12)
    # on the very instance the answer names
    assert [n for n, pixels in drawn.items() if pixels > 50] == [answer["instance_number"]], drawn
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "ohif_implicit_query.png"))
    page.close()
    assert after > before + 200, (before, after)


def test_ohif_on_a_feet_first_series_draws_the_answer_and_takes_clicks_on_the_instance_shown(
    server, flipped_study, browser
):
    """The CT with its slice normal to the feet and its instance numbers counting against it: the mask shows on the
    instance the answer names, and a Point Prompts click on that instance corrects that very answer on that slice
    (OHIF sends its volume's voxel index, the slices in the volume's order: `grounding/clicks.py`)."""
    study_uid, series_uid = flipped_study
    page = open_the_monai_label_mode(server, browser, study_uid, QUESTION)
    run_auto_segmentation(page, series_uid, QUESTION)
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": series_uid}, timeout=30).json()
    k = last_answer(info, None)["slice"]
    answer = requests.get(f"{server.url}/answers/{last_answer(info, None)['answer_id']}", timeout=30).json()
    assert answer["instance_number"] == 12 - k  # numbered from the far end: the server's slice k is instance 12 - k
    page.wait_for_timeout(3000)
    drawn = instances_showing_the_mask(page, 12)  # ends on the instance with the mask
    assert [n for n, pixels in drawn.items() if pixels > 50] == [answer["instance_number"]], drawn

    page.get_by_text("Point Prompts").click()
    prompts = page.locator(".tab", has=page.get_by_text("Point Prompts"))
    prompts.locator("select.selectBox").select_option("implicit_query_slice")
    prompts.get_by_role("cell", name=LABEL, exact=True).click()  # the segment the clicks are for
    x, y = segment_centre(page, page.locator("canvas").first.bounding_box())
    page.mouse.click(x, y)  # a foreground click in the middle of the mask shown
    page.wait_for_timeout(500)
    with page.expect_response(lambda r: "/infer/implicit_query_slice" in r.url) as refined:
        prompts.locator("button.actionButton").click()
    response = refined.value
    assert response.status == 200, response.text()
    sent = json.loads(re.search(r'"foreground":(\[\[[^\]]*\]\])', response.request.post_data or "").group(1))
    latest = requests.get(f"{server.url}/answers/list", params={"image": series_uid, "limit": 1}, timeout=30).json()
    (entry,) = latest["answers"]
    assert entry["model"] == "implicit_query_slice" and entry["reasoner_called"] is False, entry
    assert entry["slice"] == k and entry["question"] == QUESTION, (entry, sent)  # that answer, on that slice
    assert entry["refined_by_clicks"]["foreground"] == [sent[0][:2]], (entry, sent)
    x1, y1, x2, y2 = answer["box"]  # pixels of the slice
    assert x1 <= sent[0][0] <= x2 and y1 <= sent[0][1] <= y2, (sent, answer["box"])  # where the mask was drawn
    page.get_by_text("Running Inference for Point Prompts - Successful").wait_for()
    panel = page.locator(f"#medreasoner-answer[data-answer-id='{entry['answer_id']}']")
    panel.wait_for()  # the corrected answer, as the panel words it
    assert "Grounded" in panel.inner_text() and "corrected by 1 click, model not asked again" in panel.inner_text()
    covered = [page.locator(".monaiLabelPanel"), *page.locator("canvas.cornerstone-canvas").all()]  # controls, views
    assert len(covered) == 4 and not any(overlap(panel.bounding_box(), one.bounding_box()) for one in covered)
    page.wait_for_timeout(2000)
    drawn = instances_showing_the_mask(page, 12)
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "ohif_feet_first_clicks.png"))
    page.close()
    assert [n for n, pixels in drawn.items() if pixels > 50] == [answer["instance_number"]], drawn


def test_the_answers_page_shows_the_answer_with_its_picture(server, ct_study, browser):
    study_uid, series_uid = ct_study
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": series_uid}, timeout=30).json()
    answer_id = last_answer(info, None)["answer_id"]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.goto(f"{server.url}/answers/?study={study_uid}")
    card = page.locator(f"#answer-{answer_id}")
    card.wait_for()
    text = card.inner_text()
    assert QUESTION in text and last_answer(info, None)["reasoning"] in text
    assert "weights" in text and "Latency" in text
    k = last_answer(info, None)["slice"]  # worded as the OHIF panel words it (answer-text.js)
    answer = requests.get(f"{server.url}/answers/{answer_id}", timeout=30).json()
    assert f"slice {k + 1} of 12 (index {k}, DICOM instance number {answer['instance_number']})" in text, text
    carried = "() => window.MedReasonerAnswerText.carriedThrough({propagation: {slice_range: [3, 8]}})"
    assert page.evaluate(carried) == "slices 4 to 9 (index 3 to 8)"  # a volume answer, counted as the slice is
    picture = card.locator("img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "answers_page.png"))
    page.close()


def test_the_local_pacs_wants_its_password_and_stops_with_the_start(server):
    assert server.series("CT")
    assert requests.get(f"{server.dicomweb_url}/studies", timeout=10).status_code == 401  # no password, nothing
    config = server.work_dir / "pacs" / "orthanc.json"
    assert config.stat().st_mode & 0o077 == 0  # the password is the server user's only
    server.stop()
    # the server's own status: uvicorn shuts down cleanly, then ends by the signal it was sent (128 + SIGTERM)
    assert server.process.returncode in (0, 128 + signal.SIGTERM), server.log_tail()
    assert server.process.returncode is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.dicomweb_url}/studies", timeout=5)

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
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

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
    (hit,) = server.series("CT")
    return hit["0020000D"]["Value"][0], hit["0020000E"]["Value"][0]


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


def segment_pixels(page, canvas_box) -> int:
    """Pixels of one viewport drawn in the segment's colour (green-dominant; the CT is grey, the crosshairs thin)."""
    picture = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
    x0, y0 = int(canvas_box["x"]), int(canvas_box["y"])
    region = picture[y0 : y0 + int(canvas_box["height"]), x0 : x0 + int(canvas_box["width"])]
    green = (region[..., 1] - region[..., 0] > 40) & (region[..., 1] - region[..., 2] > 40)
    return int(green.sum())


def instances_showing_the_mask(page, slices: int) -> dict[int, int]:
    """Scrolls the axial view through the whole series: OHIF's instance number ("I: n" in the viewport) -> pixels of
    the mask drawn on it. Ends on the instance with the most."""
    axial = page.locator("canvas").first.bounding_box()
    page.mouse.move(axial["x"] + axial["width"] / 2, axial["y"] + axial["height"] / 2)
    for _ in range(slices):  # to the first image
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(150)
    drawn = {}
    for _ in range(slices):
        page.wait_for_timeout(500)
        (shown,) = re.findall(r"I:\s*(\d+)\s*\(\d+/\d+\)", page.locator("body").inner_text())[:1]
        drawn[int(shown)] = segment_pixels(page, axial)
        page.mouse.wheel(0, 100)
    best = max(drawn, key=drawn.get)
    for _ in range(slices - best):
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(150)
    page.wait_for_timeout(800)
    return drawn


def test_ohif_asks_the_question_shows_the_mask_and_the_reasoning(server, ct_study, browser):
    study_uid, series_uid = ct_study
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={study_uid}")
    page.get_by_role("button", name="Confirm and Hide").click()
    # The panel's server defaults to http://<host>:8000/; this server is on another port.
    page.fill("#monailabelServerURL", f"{server.url}/")
    page.locator("#monailabelServerURL").press("Tab")
    page.locator("button.actionButton").first.click()
    page.get_by_text("Options / Configurations").click()
    page.fill("#inferimplicit_queryquestion", QUESTION)  # our string option, shown as a text field
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text("Auto-Segmentation").click()
    page.wait_for_timeout(2000)  # let the viewports settle before measuring them
    before = mask_pixels(page)
    with page.expect_response(lambda r: "/infer/implicit_query" in r.url) as answer:
        page.locator(".modelSelector button.actionButton").first.click()
    response = answer.value
    assert response.status == 200, response.text()
    assert f'"question":"{QUESTION}"' in (response.request.post_data or "")
    assert series_uid in response.url
    page.get_by_text("Running Segmentation - Successful").wait_for()
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": series_uid}, timeout=30).json()
    this_run = info["medreasoner_last_query"]  # what the server recorded for this very request
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
    # on the very instance the answer names (OHIF's own slice order: lib/server/viewer_slice_order.py)
    assert [n for n, pixels in drawn.items() if pixels > 50] == [answer["instance_number"]], drawn
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "ohif_implicit_query.png"))
    page.close()
    assert after > before + 200, (before, after)


def test_the_answers_page_shows_the_answer_with_its_picture(server, ct_study, browser):
    study_uid, series_uid = ct_study
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": series_uid}, timeout=30).json()
    answer_id = info["medreasoner_last_query"]["answer_id"]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.goto(f"{server.url}/answers/?study={study_uid}")
    card = page.locator(f"#answer-{answer_id}")
    card.wait_for()
    text = card.inner_text()
    assert QUESTION in text and info["medreasoner_last_query"]["reasoning"] in text
    assert "weights" in text and "Latency" in text
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

"""OHIF, the viewer bundled with MONAI Label at /ohif/, driven in a real headless Chromium (Debian's `chromium` via
Playwright) against Orthanc: open the CT study in the MONAI Label mode, connect the panel, type the question in
"Options / Configurations", run `implicit_query` from Auto-Segmentation, and check that the server got the question
and that the viewer drew the mask. The screenshot is kept as a test artifact (see ARTIFACTS_DIR).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.dicom_series import ct_series
from tests.monailabel_server import APP_DIR, MonaiLabelServer
from tests.orthanc_server import INSTALL_HINT, OrthancServer, orthanc_installed

pytestmark = [pytest.mark.server, pytest.mark.browser]
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (requirements.txt)")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS_DIR = Path(os.environ.get("TEST_ARTIFACTS_DIR", APP_DIR / "logs" / "test-artifacts"))
QUESTION = "Which structure would explain the dull percussion note over the right lower chest?"
# SwiftShader gives headless Chromium the WebGL that OHIF's viewports need; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
STEP_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def pacs_with_ct(tmp_path_factory):
    if not orthanc_installed() or not Path(CHROMIUM).exists():
        pytest.skip(INSTALL_HINT + " and chromium")
    pacs = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    series = ct_series(tmp_path_factory.mktemp("dicom"))
    pacs.upload(series.files)
    yield pacs, series
    pacs.stop()


@pytest.fixture(scope="module")
def server(pacs_with_ct, format_tuned_reasoner_dir, tmp_path_factory):
    pacs, _ = pacs_with_ct
    conf = {"models": "implicit_query", "reasoner": str(format_tuned_reasoner_dir), "max_new_tokens": "96"}
    cache = tmp_path_factory.mktemp("cache")
    running = MonaiLabelServer(
        pacs.dicomweb_url,
        conf,
        tmp_path_factory.mktemp("logs") / "ohif_server.log",
        env={"MONAI_LABEL_DATASTORE_CACHE_PATH": str(cache)},
    ).start()
    yield running
    running.stop()


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


def show_grounded_slice(page) -> None:
    """For the screenshot: the axial view opens one slice away from the grounded one; scroll to the most tinted."""
    axial = page.locator("canvas").first.bounding_box()
    page.mouse.move(axial["x"] + axial["width"] / 2, axial["y"] + axial["height"] / 2)
    tinted = {0: mask_pixels(page)}
    position = 0
    for step in (-1, 2):  # one slice up, then one below where we started
        page.mouse.wheel(0, 100 * step)
        position += step
        page.wait_for_timeout(800)
        tinted[position] = mask_pixels(page)
    best = max(tinted, key=tinted.get)
    page.mouse.wheel(0, 100 * (best - position))
    page.wait_for_timeout(800)


def test_ohif_asks_the_question_and_shows_the_mask(server, pacs_with_ct):
    _, series = pacs_with_ct
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={series.study_uid}")
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
            assert series.series_uid in response.url
            page.get_by_text("Running Segmentation - Successful").wait_for()
            page.wait_for_timeout(3000)  # the label map is drawn on the next render
            after = mask_pixels(page)
            show_grounded_slice(page)
            ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS_DIR / "ohif_implicit_query.png"))
        finally:
            browser.close()
    assert after > before + 200, (before, after)
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": series.series_uid}, timeout=30).json()
    assert info["medreasoner_last_query"]["question"] == QUESTION  # it reached the app with the question

"""OHIF, the viewer bundled with MONAI Label at /ohif/, driven in a real headless Chromium (Debian's `chromium` via
Playwright) against the README's default start (`bash scripts/start.sh`: the demo with its local Orthanc, loaded with
the sample series): open a CT study in the MONAI Label mode, connect the panel, type the question in
"Options / Configurations", run `implicit_query` from Auto-Segmentation, and check that the server got the question,
that the viewer drew the mask, and that this run's answer and reasoning appear in the answer panel without a reload.

What the clinician looks at is judged by what cornerstone (OHIF's renderer) draws, never by OHIF's own slice counter:
after Run the view is on the image the mask is on (the DICOM instance the answer, the SEG and the SR name), the
labelmap's pixels are on that image, and OHIF's "I:" label names it; on head-first and feet-first series with an even
and an odd number of slices. Point Prompts: a foreground click adds, a background click removes (OHIF's Run with
*background* chosen included), and a click that contradicts an earlier one is refused with a message the panel shows.
Then the answers page shows the same answer with its picture, and stopping the start stops Orthanc. Screenshots are
kept as test artifacts (see ARTIFACTS_DIR).
"""

from __future__ import annotations

import io
import json
import os
import re
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
from monailabel_app.demo.sample_dicom import ODD_CT, ODD_SLICES, Series, flipped_ct_series, odd_ct_series
from monailabel_app.grounding.last_answers import last_answer
from tests.support.browser import chromium_installed, sync_api
from tests.support.default_start import DefaultStart
from tests.support.monailabel_server import APP_DIR
from tests.support.orthanc_server import INSTALL_HINT, orthanc_installed

pytestmark = [pytest.mark.server, pytest.mark.browser]
playwright = sync_api()  # skips this module without Playwright

ARTIFACTS_DIR = Path(os.environ.get("TEST_ARTIFACTS_DIR", APP_DIR / "logs" / "test-artifacts"))
QUESTION = "Which structure would explain the dull percussion note over the right lower chest?"
STEP_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not orthanc_installed() or not chromium_installed():
        pytest.skip(INSTALL_HINT + " and chromium")
    running = DefaultStart(tmp_path_factory.mktemp("default_start")).start()
    yield running
    running.stop()


def loaded_series(server, description: str) -> tuple[str, str]:
    """A series the default start loaded into its local PACS, by its description: (study UID, series UID)."""
    (hit,) = [one for one in server.series("CT") if one["0008103E"]["Value"][0] == description]
    return hit["0020000D"]["Value"][0], hit["0020000E"]["Value"][0]


def stored(server, series: Series) -> tuple[str, str]:
    """A series made here, stored in the same local PACS: (study UID, series UID)."""
    client = DICOMwebClient(server.dicomweb_url, session=create_session_from_user_pass(*server.pacs_auth()))
    client.store_instances([dcmread(str(path)) for path in series.files])
    return series.study_uid, series.series_uid


@pytest.fixture(scope="module")
def ct_study(server):
    """The sample CT (head first, 12 slices): (study UID, series UID)."""
    return loaded_series(server, "Synthetic CT")


@pytest.fixture(scope="module")
def flipped_study(server, tmp_path_factory):
    """The sample CT feet first (`sample_dicom.flipped_ct_series`, 12 slices): (study, series)."""
    return stored(server, flipped_ct_series(tmp_path_factory.mktemp("feet_first")))


@pytest.fixture(scope="module")
def odd_studies(server, tmp_path_factory):
    """The CT with an odd number of slices: head first (loaded by the default start) and feet first (made here)."""
    feet_first = stored(server, odd_ct_series(tmp_path_factory.mktemp("feet_first_odd"), feet_first=True))
    return {"head first": loaded_series(server, ODD_CT), "feet first": feet_first}


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


# What the axial view shows, as cornerstone (OHIF's renderer) knows it: the DICOM instance of the image drawn (its
# imageId), the labelmap's pixels on that image (per segment index: the label image that references that imageId, and
# the values at the voxels [i, j] asked about), and OHIF's label in the view's bottom right corner ("I: 7 (6/12)").
AXIAL_VIEW_JS = """(points) => {
  const cornerstone = window.cornerstone;
  const viewports = cornerstone.getRenderingEngines()[0].getViewports();
  const axial = viewports.find(v => v.id.includes('axial')) || viewports[0];
  const imageId = axial.getCurrentImageId();
  const instance = Number(cornerstone.metaData.get('generalImageModule', imageId).instanceNumber);
  const pixels = {};
  const at = (points || []).map(() => 0);
  const segmentation = window.services.segmentationService.getSegmentations()[0];
  for (const labelId of segmentation ? segmentation.representationData.Labelmap.imageIds : []) {
    const label = cornerstone.cache.getImage(labelId);
    if (!label || label.referencedImageId !== imageId) continue;
    const values = label.voxelManager.getScalarData();
    for (const value of values) if (value) pixels[value] = (pixels[value] || 0) + 1;
    (points || []).forEach(([i, j], n) => { at[n] = values[j * label.columns + i]; });
  }
  const texts = [...axial.element.parentElement.querySelectorAll('.overlay-item')].map(e => e.innerText);
  return { instance, pixels, at, label: texts.find(text => /\\d+\\/\\d+/.test(text)) || null };
}"""


def axial_view(page, points=()) -> dict:
    return page.evaluate(AXIAL_VIEW_JS, [list(p) for p in points])


def wait_for_the_axial_view_on(page, instance: int):
    page.wait_for_function(f"() => ({AXIAL_VIEW_JS})([]).instance === {instance}", timeout=STEP_TIMEOUT_MS)


def scroll_axial(page, steps: int):
    axial = page.locator("canvas").first.bounding_box()
    page.mouse.move(axial["x"] + axial["width"] / 2, axial["y"] + axial["height"] / 2)
    for _ in range(abs(steps)):
        page.mouse.wheel(0, 100 if steps > 0 else -100)
        page.wait_for_timeout(150)


# The target segment's label image on the image the axial view draws, as one flat list (rows of columns).
LABEL_SLICE_JS = """() => {
  const cornerstone = window.cornerstone;
  const viewports = cornerstone.getRenderingEngines()[0].getViewports();
  const axial = viewports.find(v => v.id.includes('axial')) || viewports[0];
  const imageId = axial.getCurrentImageId();
  const segmentation = window.services.segmentationService.getSegmentations()[0];
  const labelId = segmentation.representationData.Labelmap.imageIds.find(
    id => cornerstone.cache.getImage(id).referencedImageId === imageId);
  return Array.from(cornerstone.cache.getImage(labelId).voxelManager.getScalarData());
}"""


def named_instance(label: str | None) -> int | None:
    """The instance number in OHIF's label, "I: 7 (6/12)" (this OHIF's own writes "I:7 (6/12)")."""
    found = re.match(r"I:\s*(\d+) \(", label or "")
    return int(found.group(1)) if found else None


def instances_showing_the_mask(page, slices: int) -> dict[int, int]:
    """Scrolls the axial view through the whole series: the DICOM instance number of each image drawn -> pixels of
    the mask drawn on it; OHIF's I: label must name that instance on every image. Ends on the instance with the most."""
    axial = page.locator("canvas").first.bounding_box()
    scroll_axial(page, -slices)  # to the first image
    drawn, labels = [], []
    for _ in range(slices):
        page.wait_for_timeout(500)
        shown = axial_view(page)
        drawn.append((shown["instance"], segment_pixels(page, axial)))
        labels.append((shown["instance"], shown["label"]))
        scroll_axial(page, 1)
    best = max(range(slices), key=lambda n: drawn[n][1])
    scroll_axial(page, -(slices - best))  # back from the last image (the last scroll stayed on it)
    page.wait_for_timeout(800)
    assert sorted(n for n, _ in drawn) == list(range(1, slices + 1)), drawn  # every image, once
    assert all(named_instance(label) == n for n, label in labels), labels  # the label names the image drawn
    return dict(drawn)


def check_the_view_shows_the_mask(page, answer: dict, slices: int):
    """After Run: without a scroll, the axial view is on the instance the answer names, the labelmap's pixels are on
    that image and drawn, and OHIF's label names it; "Go to the mask" brings the view back after a scroll away."""
    number = answer["instance_number"]
    wait_for_the_axial_view_on(page, number)
    page.wait_for_timeout(1000)  # the label map is drawn on the next render
    shown = axial_view(page)
    assert shown["pixels"].get("1", 0) > 50 and named_instance(shown["label"]) == number, shown
    assert segment_pixels(page, page.locator("canvas").first.bounding_box()) > 50  # drawn on screen
    drawn = instances_showing_the_mask(page, slices)
    assert [n for n, pixels in drawn.items() if pixels > 50] == [number], drawn  # that instance only
    scroll_axial(page, 3 if number <= slices // 2 else -3)
    page.wait_for_timeout(500)
    assert axial_view(page)["instance"] != number
    page.locator("#medreasoner-go-to-mask").click()
    wait_for_the_axial_view_on(page, number)


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


def point_prompts(page):
    """The Point Prompts tab with `implicit_query_slice` chosen and the answer's segment (target) selected."""
    page.get_by_text("Point Prompts").click()
    prompts = page.locator(".tab", has=page.get_by_text("Point Prompts"))
    prompts.locator("select.selectBox").select_option("implicit_query_slice")
    choose_segment(prompts, LABEL)
    return prompts


def choose_segment(prompts, name: str):
    prompts.get_by_role("cell", name=name, exact=True).click()  # the segment the next clicks are for
    prompts.page.wait_for_timeout(300)


def run_point_prompts(page, prompts):
    """Presses Run in Point Prompts: OHIF's response and the clicks it sent ({"foreground": [[i, j, k]], ...})."""
    with page.expect_response(lambda r: "/infer/implicit_query_slice" in r.url) as refined:
        prompts.locator("button.actionButton").click()
    response = refined.value
    posted = response.request.post_data or ""
    sent = {
        kind: json.loads(found.group(1)) if (found := re.search(rf'"{kind}":(\[(?:\[[^\]]*\],?)*\])', posted)) else None
        for kind in ("foreground", "background")
    }
    return response, sent


# Where on the page the centre of voxel [i, j, k] of the axial view's volume is drawn (OHIF's probe sends back the
# voxel under the click: `worldToIndex`, rounded).
VOXEL_ON_PAGE_JS = """(ijk) => {
  const viewports = window.cornerstone.getRenderingEngines()[0].getViewports();
  const axial = viewports.find(v => v.id.includes('axial')) || viewports[0];
  const volume = window.cornerstone.cache.getVolume(axial.getVolumeId());
  const [x, y] = axial.worldToCanvas(volume.imageData.indexToWorld(ijk));
  const box = axial.element.getBoundingClientRect();
  return [box.left + x, box.top + y];
}"""


def click_voxel(page, ijk):
    x, y = page.evaluate(VOXEL_ON_PAGE_JS, list(ijk))
    page.mouse.click(x, y)
    page.wait_for_timeout(500)


def missed_voxel(answer: dict) -> tuple[int, int, int]:
    """Where the mask missed something: right of the answer's box, between its points' rows, on its slice."""
    (_, _, x2, _), k = answer["box"], answer["slice"]
    return min(int(x2) + 6, 120), round(sum(y for _, y in answer["points"]) / 2), k


def wrong_voxel(page, answer: dict, missed) -> tuple[int, int, int]:
    """Where the mask took in something wrong: the middle of the target segment's pixels on a row below the answer's
    points and the foreground click (`missed`), as the axial view's labelmap holds them."""
    mask = np.asarray(page.evaluate(LABEL_SLICE_JS)).reshape(96, 128) == 1
    keep = max(missed[1], *(y for _, y in answer["points"]))
    rows = [row for row in range(int(keep) + 3, int(answer["box"][3])) if mask[row].any()]
    assert rows, "no mask below the answer's points to remove"
    row = rows[len(rows) // 2]
    return int(np.median(np.flatnonzero(mask[row]))), row, answer["slice"]


def newest_entry(server, series_uid: str) -> dict:
    latest = requests.get(f"{server.url}/answers/list", params={"image": series_uid, "limit": 1}, timeout=30).json()
    return latest["answers"][0]


def the_answer(server, series_uid: str) -> dict:
    """The server's record of the last answer on the series: its answer log entry."""
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": series_uid}, timeout=30).json()
    return requests.get(f"{server.url}/answers/{last_answer(info, None)['answer_id']}", timeout=30).json()


def test_ohif_asks_the_question_shows_the_mask_and_the_reasoning(server, ct_study, browser):
    """The sample CT, head first with 12 slices: OHIF opens it between its two middle images, on instance 6, and this
    OHIF labelled that image "I: 7"; the answer is on instance 7. After Run the view is on instance 7, labelled so."""
    study_uid, series_uid = ct_study
    page = open_the_monai_label_mode(server, browser, study_uid, QUESTION)
    before = mask_pixels(page)
    assert axial_view(page)["instance"] == 6  # where this OHIF opens the series
    run_auto_segmentation(page, series_uid, QUESTION)
    answer = the_answer(server, series_uid)  # what the server recorded for this very request
    assert answer["question"] == QUESTION and answer["model"] == "implicit_query"
    panel = page.locator(f"#medreasoner-answer[data-answer-id='{answer['answer_id']}']")
    panel.wait_for()  # the panel polls: no reload, no developer tools
    shown = panel.inner_text()
    assert QUESTION in shown and answer["reasoning"] in shown, shown
    k, number = answer["slice"], answer["instance_number"]
    assert (k, number) == (6, 7)  # head first: instance numbers count along the slice normal
    assert f"Mask on DICOM instance {number} (index {k} of 12 slices), I: {number} in the view." in shown, shown
    check_the_view_shows_the_mask(page, answer, 12)
    page.wait_for_timeout(1000)
    assert mask_pixels(page) > before + 200
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "ohif_implicit_query.png"))  # docs/ohif_answer_panel.png
    page.close()


@pytest.mark.parametrize("orientation", ["head first", "feet first"])
def test_after_run_the_view_shows_the_mask_on_a_series_with_an_odd_number_of_slices(
    server, odd_studies, browser, orientation
):
    study_uid, series_uid = odd_studies[orientation]
    page = open_the_monai_label_mode(server, browser, study_uid, QUESTION)
    run_auto_segmentation(page, series_uid, QUESTION)
    answer = the_answer(server, series_uid)
    k = answer["slice"]
    assert answer["instance_number"] == (ODD_SLICES - k if orientation == "feet first" else k + 1)
    check_the_view_shows_the_mask(page, answer, ODD_SLICES)
    page.close()


def test_ohif_on_a_feet_first_series_draws_the_answer_and_takes_clicks_on_the_instance_shown(
    server, flipped_study, browser
):
    """The CT with its slice normal to the feet and its instance numbers counting against it: the mask shows on the
    instance the answer names, and a Point Prompts click on that instance corrects that very answer on that slice
    (OHIF sends its volume's voxel index, the slices in the volume's order: `grounding/clicks.py`)."""
    study_uid, series_uid = flipped_study
    page = open_the_monai_label_mode(server, browser, study_uid, QUESTION)
    run_auto_segmentation(page, series_uid, QUESTION)
    answer = the_answer(server, series_uid)
    k = answer["slice"]
    assert answer["instance_number"] == 12 - k  # numbered from the far end: the server's slice k is instance 12 - k
    check_the_view_shows_the_mask(page, answer, 12)

    prompts = point_prompts(page)
    x, y = segment_centre(page, page.locator("canvas").first.bounding_box())
    page.mouse.click(x, y)  # a foreground click in the middle of the mask shown
    page.wait_for_timeout(500)
    response, sent = run_point_prompts(page, prompts)
    assert response.status == 200, response.text()
    latest = requests.get(f"{server.url}/answers/list", params={"image": series_uid, "limit": 1}, timeout=30).json()
    (entry,) = latest["answers"]
    assert entry["model"] == "implicit_query_slice" and entry["reasoner_called"] is False, entry
    assert entry["slice"] == k and entry["question"] == QUESTION, (entry, sent)  # that answer, on that slice
    assert entry["refined_by_clicks"]["foreground"] == [sent["foreground"][0][:2]], (entry, sent)
    x1, y1, x2, y2 = answer["box"]  # pixels of the slice
    assert x1 <= sent["foreground"][0][0] <= x2 and y1 <= sent["foreground"][0][1] <= y2, (sent, answer["box"])
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


def test_point_prompts_a_foreground_click_adds_a_background_click_removes_and_a_contradiction_is_refused(
    server, ct_study, browser
):
    """The issue's case: with the *background* segment chosen, this OHIF sends the background clicks as both lists and
    leaves the earlier foreground click out. The server reads them as background clicks and keeps the foreground
    click; OHIF draws a Run's result only into the segment chosen, so the panel says to Run with the target chosen,
    and that Run removes the wrong region (the labelmap's pixels of the target segment, counted before and after).
    A background click on the foreground click's voxel is refused (422) and the panel says why."""
    study_uid, series_uid = ct_study
    page = open_the_monai_label_mode(server, browser, study_uid, QUESTION)
    run_auto_segmentation(page, series_uid, QUESTION)
    answer = the_answer(server, series_uid)
    wait_for_the_axial_view_on(page, answer["instance_number"])
    page.wait_for_timeout(1000)
    prompts = point_prompts(page)

    # the mask missed something right of the answer's box: a foreground click there, the target segment chosen
    missed = missed_voxel(answer)
    click_voxel(page, missed)
    response, sent = run_point_prompts(page, prompts)
    assert response.status == 200 and sent["foreground"] == [list(missed)], (response.text(), sent)
    page.get_by_text("Running Inference for Point Prompts - Successful").wait_for()
    added = newest_entry(server, series_uid)
    assert added["refined_by_clicks"] == {"foreground": [list(missed[:2])], "background": []}, added
    page.wait_for_timeout(1500)
    assert axial_view(page)["pixels"].get("1") == added["mask_pixels"]  # OHIF drew the server's mask

    # it took in something wrong below the answer's points: a background click there, *background* chosen
    wrong = wrong_voxel(page, answer, missed)
    choose_segment(prompts, "background")
    click_voxel(page, wrong)
    response, sent = run_point_prompts(page, prompts)
    assert response.status == 200 and sent["foreground"] == sent["background"] == [list(wrong)], sent  # OHIF's form
    removed = newest_entry(server, series_uid)
    assert removed["refined_by_clicks"] == {"foreground": [list(missed[:2])], "background": [list(wrong[:2])]}
    assert removed["clicks_read_as_background"] is True and removed["mask_pixels"] < added["mask_pixels"], removed
    hint = page.locator(f"#medreasoner-answer[data-answer-id='{removed['answer_id']}']")
    hint.wait_for()
    assert "Background clicks taken; nothing drawn yet" in hint.inner_text()
    page.wait_for_timeout(1000)  # OHIF would draw a label into a segment 'background': the server sent it empty
    assert axial_view(page)["pixels"] == {"1": added["mask_pixels"]}  # nothing changed, nothing stray

    choose_segment(prompts, LABEL)  # Run with the target chosen: OHIF sends both kinds and draws into the target
    response, sent = run_point_prompts(page, prompts)
    assert response.status == 200 and sent == {"foreground": [list(missed)], "background": [list(wrong)]}, sent
    page.get_by_text("Running Inference for Point Prompts - Successful").first.wait_for()
    shown = newest_entry(server, series_uid)
    assert shown["refined_by_clicks"] == removed["refined_by_clicks"] and shown["mask_pixels"] == removed["mask_pixels"]
    page.wait_for_timeout(1500)
    view = axial_view(page, [wrong, missed])
    print(f"target pixels on the slice: {added['mask_pixels']} after the foreground click, {view['pixels']} after")
    assert view["pixels"] == {"1": removed["mask_pixels"]} and removed["mask_pixels"] < added["mask_pixels"], view
    assert view["at"][0] == 0, view  # where the background click was

    # a background click on the very voxel of the earlier foreground click: refused, and the panel says why
    choose_segment(prompts, "background")
    click_voxel(page, missed)
    response, sent = run_point_prompts(page, prompts)
    assert response.status == 422 and "was a foreground click on this answer" in response.text(), response.text()
    refused = page.locator("#medreasoner-refused")
    refused.wait_for()
    assert "was a foreground click on this answer and now comes as a background click" in refused.inner_text()
    assert newest_entry(server, series_uid)["answer_id"] == shown["answer_id"]  # nothing changed
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "ohif_point_prompts_refused.png"))
    prompts.get_by_text("Clear Points").click()  # that click taken back in OHIF; the target chosen, Run again
    choose_segment(prompts, LABEL)
    response, _ = run_point_prompts(page, prompts)
    assert response.status == 200, response.text()
    refused.wait_for(state="detached")  # answered since: the refusal is old news
    page.close()


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
    assert f"DICOM instance {answer['instance_number']} (index {k} of 12 slices)" in text, text
    volume = "() => window.MedReasonerAnswerText.slice({slice: 6, num_slices: 12})"  # no DICOM instance: its place
    assert page.evaluate(volume) == "slice 7 of 12 (index 6)"
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

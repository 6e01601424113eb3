"""A stock OHIF (npm's @ohif/app 3.13.2, no extension or mode of ours: `tests/support/stock_ohif.py`) shows a saved
answer from what the PACS holds alone: the DICOM SEG as an overlay on the series, and the TID 1500 Measurement Report's
box on the key slice with its finding in the measurements panel. That is the promise of writing standard objects: any
hospital's viewer reads them, not only ours.

The README's default start (`bash scripts/start.sh`: the demo, its local Orthanc with the sample series) answers a
question and saves the label as a client does (`PUT /datastore/label`), which stores the SEG and the report in the
Orthanc. Then in headless Chromium, as a radiologist would: open the study, double-click the SEG and load it, double-
click the report and answer OHIF's "continue tracking measurements?" with yes. Judged by what cornerstone (OHIF's
renderer) holds and draws: the labelmap on the key slice is the saved mask, pixel for pixel, and is drawn; the box is
the report's polyline, on the instance the report names, and is drawn; the report's finding is listed. Screenshots are
test artifacts (ARTIFACTS_DIR); docs/images/stock-ohif-answer.png is one of them, made smaller.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import requests
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from PIL import Image

from lib.infers.implicit_query import LABEL_NAME
from tests.default_start import DefaultStart
from tests.orthanc_server import INSTALL_HINT, orthanc_installed
from tests.support.stock_ohif import INSTALL_HINT as VIEWER_HINT
from tests.support.stock_ohif import StockOhif, stock_ohif_installed
from tests.test_ohif_browser import (
    ARTIFACTS_DIR,
    CHROMIUM,
    QUESTION,
    STEP_TIMEOUT_MS,
    loaded_series,
    playwright,
    the_answer,
)
from tests.test_pacs import label_of, ohif_infer, ohif_save

pytestmark = [pytest.mark.server, pytest.mark.browser]

TID_1500 = "1500"


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    if not orthanc_installed() or not Path(CHROMIUM).exists():
        pytest.skip(INSTALL_HINT + " and chromium")
    if not stock_ohif_installed():
        pytest.skip(VIEWER_HINT)
    # with a measured confidence, the report carries a NUM: OHIF 3.13 once dropped the box for it (in the box's group)
    running = DefaultStart(
        tmp_path_factory.mktemp("default_start"), args=["--conf", "demo", "true", "--conf", "confidence_samples", "2"]
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def viewer(start):
    running = StockOhif(start.dicomweb_url, start.pacs_auth()).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def saved(start, tmp_path_factory):
    """The sample CT answered and its label saved as OHIF saves it; what the server stored in the PACS for it."""
    study_uid, series_uid = loaded_series(start, "Synthetic CT")
    label = label_of(ohif_infer(start, series_uid), tmp_path_factory.mktemp("label"), "ct").array
    answer = the_answer(start, series_uid)
    assert answer.get("confidence") is not None, "the start measures confidence: the report must carry it"
    params = {"label_info": [{"name": LABEL_NAME, "idx": 1}], "question": QUESTION, "model": "implicit_query"}
    response = ohif_save(start, series_uid, label, {**params, "slice": answer["slice"]})
    assert response.status_code == 200, response.text
    info = requests.get(
        f"{start.url}/datastore/label/info", params={"label": series_uid, "tag": "final"}, timeout=30
    ).json()
    assert info.get("report_stored"), info
    pacs = DICOMwebClient(start.dicomweb_url, session=create_session_from_user_pass(*start.pacs_auth()))
    (seg,) = pacs.retrieve_series(study_uid, info["SeriesInstanceUID"])
    (report,) = pacs.retrieve_series(study_uid, info["ReportSeriesInstanceUID"])
    return {"study": study_uid, "label": label, "answer": answer, "seg": seg, "report": report}


def measurement_report(report) -> hd.sr.MeasurementReport:
    """The report as TID 1500 (highdicom reads it), or a failure that says what the PACS holds instead."""
    templates = [item.TemplateIdentifier for item in report.get("ContentTemplateSequence", [])]
    assert templates == [TID_1500], f"the stored report is not a TID 1500 Measurement Report (templates {templates})"
    return hd.sr.MeasurementReport.from_sequence([report], copy=False)  # a copy of a retrieved file only warns


# What the viewport shows, as cornerstone holds it: the SOP instance of the image drawn, each segmentation's segment
# labels, whether it is shown on the viewport, and its label image on the key instance (one flat list, rows of
# columns); the annotations (tool, SOP instance, the handles in image pixels: column, row).
VIEW_JS = """(keySop) => {
  const cs = window.cornerstone, segmentations = window.services.segmentationService;
  const viewport = cs.getRenderingEngines()[0].getViewports()[0];
  const sopOf = imageId => imageId && cs.metaData.get('sopCommonModule', imageId)?.sopInstanceUID;
  const shown = segmentations.getSegmentationRepresentations(viewport.id).filter(r => r.visible);
  return {
    sop: sopOf(viewport.getCurrentImageId()),
    segmentations: segmentations.getSegmentations().map(s => {
      const labels = (s.representationData.Labelmap?.imageIds || []).map(id => cs.cache.getImage(id)).filter(Boolean);
      const key = labels.find(image => sopOf(image.referencedImageId) === keySop);
      return {
        segments: Object.fromEntries(Object.entries(s.segments).map(([index, segment]) => [index, segment.label])),
        shown: shown.some(r => r.segmentationId === s.segmentationId),
        colour: segmentations.getSegmentColor(viewport.id, s.segmentationId, 1),
        key: key ? Array.from(key.voxelManager.getScalarData()) : null,
      };
    }),
    annotations: window.cornerstoneTools.annotation.state.getAllAnnotations()
      .filter(a => a.metadata.referencedImageId)
      .map(a => ({
        tool: a.metadata.toolName,
        sop: sopOf(a.metadata.referencedImageId),
        points: a.data.handles.points.map(p => cs.utilities.worldToImageCoords(a.metadata.referencedImageId, p)),
      })),
  };
}"""


def view(page, key_sop: str) -> dict:
    return page.evaluate(VIEW_JS, key_sop)


def viewport_pixels(page) -> np.ndarray:
    """The viewport's pixels as the screen shows them (RGB)."""
    box = page.locator("canvas.cornerstone-canvas").first.bounding_box()
    picture = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
    x0, y0 = int(box["x"]), int(box["y"])
    return picture[y0 : y0 + int(box["height"]), x0 : x0 + int(box["width"])]


def open_the_study(page, viewer: StockOhif, study_uid: str):
    page.goto(viewer.viewer_url(study_uid))
    page.wait_for_function(
        "() => window.cornerstone?.getRenderingEngines()[0]?.getViewports()[0]?.getCurrentImageId()",
        timeout=STEP_TIMEOUT_MS,
    )
    try:  # OHIF's first-visit tour covers the page until skipped
        page.get_by_text("Skip all", exact=True).click(timeout=10_000)
    except playwright.TimeoutError:  # no tour this time
        pass


def double_click_series(page, series_uid: str):
    """The study browser's thumbnail of a series (by its display set), double-clicked to show it in the viewport."""
    find = """(uid) => window.services.displaySetService.getActiveDisplaySets()
                .find(d => d.SeriesInstanceUID === uid)?.displaySetInstanceUID"""
    try:
        display_set = page.wait_for_function(find, arg=series_uid, timeout=20_000).json_value()
    except playwright.TimeoutError:
        raise AssertionError(f"OHIF lists no series {series_uid} in the study") from None
    page.locator(f"#thumbnail-{display_set}").dblclick()


def test_stock_ohif_shows_the_seg_and_the_reports_box_and_finding(saved, viewer, browser):
    seg, report = saved["seg"], saved["report"]
    measurements = measurement_report(report)
    (volumetric,) = measurements.get_volumetric_roi_measurement_groups()
    (planar,) = [  # the box: a closed POLYLINE tracked with the segment (the key points are groups of their own)
        group
        for group in measurements.get_planar_roi_measurement_groups()
        if group.tracking_uid == volumetric.tracking_uid and group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    ]
    key_sop = planar.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    polyline = np.asarray(planar.roi.value, dtype=float)
    finding = planar.finding_type.meaning
    assert volumetric.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    answer, label = saved["answer"], saved["label"]
    x1, y1, x2, y2 = answer["box"]
    assert np.allclose(polyline.min(axis=0), [x1, y1], atol=1) and np.allclose(polyline.max(axis=0), [x2, y2], atol=1)

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    refusals = []  # why OHIF's SR reader dropped a measurement group, in its own words
    page.on("console", lambda m: refusals.append(m.text) if "Unable to generate tool state" in m.text else None)
    open_the_study(page, viewer, saved["study"])

    # the SEG: loaded onto the CT as a labelmap; on the key instance it is the saved mask, pixel for pixel
    double_click_series(page, seg.SeriesInstanceUID)
    page.get_by_text("Do you want to open this Segmentation?").wait_for()
    page.get_by_role("button", name="Yes").click()
    page.wait_for_function(
        f"() => ({VIEW_JS})({json.dumps(key_sop)}).segmentations.some(s => s.shown && s.key)", timeout=STEP_TIMEOUT_MS
    )
    (segmentation,) = view(page, key_sop)["segmentations"]
    assert segmentation["segments"] == {"1": seg.SegmentSequence[0].SegmentLabel}, segmentation["segments"]
    k = answer["slice"]
    assert label[k].any() and np.array_equal(np.reshape(segmentation["key"], label[k].shape) == 1, label[k] == 1)

    # the report: OHIF asks to track its measurements; yes brings the box onto the key instance, with its finding
    double_click_series(page, report.SeriesInstanceUID)
    page.get_by_text("Do you want to continue tracking measurements for this study?").wait_for()
    page.get_by_role("button", name="Yes").click()
    try:
        page.wait_for_function(
            f"() => ({VIEW_JS})({json.dumps(key_sop)}).annotations.some(a => a.tool === 'RectangleROI')",
            timeout=STEP_TIMEOUT_MS,
        )
    except playwright.TimeoutError:
        raise AssertionError(f"OHIF drew no box from the report; its SR reader said: {refusals}") from None
    page.wait_for_timeout(1500)  # drawn on the next render
    shown = view(page, key_sop)
    (box,) = [a for a in shown["annotations"] if a["tool"] == "RectangleROI"]
    assert box["sop"] == key_sop and shown["sop"] == key_sop, (box["sop"], shown["sop"], key_sop)  # the key slice
    corners = np.asarray(box["points"])[:, :2]
    assert np.allclose(sorted(map(tuple, corners)), sorted(map(tuple, polyline[:4])), atol=0.01), (corners, polyline)
    (segmentation,) = shown["segmentations"]
    assert segmentation["shown"]  # still on the viewport beside the box

    # the measurements panel lists the report's finding for each shape on the key slice (the box, the key points)
    rows = page.locator('[data-cy="data-row-title"]')
    if not rows.first.is_visible():
        page.locator('[data-cy="trackedMeasurements-btn"]').click()
    rows.first.wait_for()
    page.wait_for_timeout(1000)
    listed = rows.all_inner_texts()
    assert listed == [finding] * len(measurements.get_planar_roi_measurement_groups()), (listed, finding)

    # drawn: the segment's colour over the mask, the annotation's yellow along the box
    pixels = viewport_pixels(page)
    dominant = int(np.argmax(segmentation["colour"][:3]))
    others = [c for c in range(3) if c != dominant]
    tinted = (pixels[..., dominant] - pixels[..., others].max(axis=-1)) > 40
    yellow = (np.minimum(pixels[..., 0], pixels[..., 1]) - pixels[..., 2]) > 120
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "stock_ohif_answer.png"))
    assert tinted.sum() > int(label[k].sum()), (tinted.sum(), int(label[k].sum()))  # every voxel a pixel or more
    box_width, box_height = (x2 - x1), (y2 - y1)
    assert yellow.sum() > 2 * (box_width + box_height), yellow.sum()  # the box's outline, at least once round
    page.close()

"""Test support: what an OHIF page shows of a saved answer, read as cornerstone (OHIF's renderer) holds and draws it,
and what the stored TID 1500 report says it should show. One place for both OHIFs the suite opens the archive in: the
stock one from npm (`tests/support/stock_ohif.py`) and the one bundled with MONAI Label at `/ohif/`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from PIL import Image

TID_1500 = "1500"

# What the viewport shows, as cornerstone holds it (null while OHIF has none): the SOP instance of the image drawn, each segmentation's segment
# labels, whether it is shown on the viewport, and its label image on the key instance (one flat list, rows of
# columns); the annotations (tool, graphic type where an SR display gives one, the SOP instance, the handles in image
# pixels: column, row, and the labels an SR display writes beside the shape).
VIEW_JS = """(keySop) => {
  const cs = window.cornerstone, segmentations = window.services.segmentationService;
  const viewport = cs.getRenderingEngines()[0]?.getViewports()[0];
  if (!viewport) return null;  // between two views (OHIF replaces the viewport when another series is put in it)
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
        graphic: a.metadata.graphicType || null,
        sop: sopOf(a.metadata.referencedImageId),
        points: a.data.handles.points.map(p => cs.utilities.worldToImageCoords(a.metadata.referencedImageId, p)),
        labels: (a.data.labels || []).map(l => `${l.label}: ${l.value}`),
      })),
  };
}"""


def view(page, key_sop: str) -> dict:
    return page.evaluate(VIEW_JS, key_sop)


def wait_for_view(page, key_sop: str, condition: str, timeout_ms: float):
    """Waits until `condition`, a JavaScript expression on `v` (what VIEW_JS returns), holds."""
    page.wait_for_function(f"() => (v => v && ({condition}))(({VIEW_JS})({json.dumps(key_sop)}))", timeout=timeout_ms)


def viewport_pixels(page) -> np.ndarray:
    """The first viewport's pixels as the screen shows them (RGB)."""
    box = page.locator("canvas.cornerstone-canvas").first.bounding_box()
    picture = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
    x0, y0 = int(box["x"]), int(box["y"])
    return picture[y0 : y0 + int(box["height"]), x0 : x0 + int(box["width"])]


def tinted(pixels: np.ndarray, colour) -> np.ndarray:
    """Pixels drawn in a segment's colour over the grey CT: its strongest channel well above the other two."""
    dominant = int(np.argmax(colour[:3]))
    others = [c for c in range(3) if c != dominant]
    return (pixels[..., dominant] - pixels[..., others].max(axis=-1)) > 40


def double_click_series(page, series_uid: str):
    """The study browser's thumbnail of a series (by its display set), double-clicked to show it in the viewport."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    find = """(uid) => window.services.displaySetService.getActiveDisplaySets()
                .find(d => d.SeriesInstanceUID === uid)?.displaySetInstanceUID"""
    try:
        display_set = page.wait_for_function(find, arg=series_uid, timeout=20_000).json_value()
    except PlaywrightTimeout:
        raise AssertionError(f"OHIF lists no series {series_uid} in the study") from None
    page.locator(f"#thumbnail-{display_set}").dblclick()


def measurement_report(report) -> hd.sr.MeasurementReport:
    """The report as TID 1500 (highdicom reads it), or a failure that says what the PACS holds instead."""
    templates = [item.TemplateIdentifier for item in report.get("ContentTemplateSequence", [])]
    assert templates == [TID_1500], f"the stored report is not a TID 1500 Measurement Report (templates {templates})"
    return hd.sr.MeasurementReport.from_sequence([report], copy=False)  # a copy of a retrieved file only warns


@dataclass
class ReportedAnswer:
    """What the stored report gives a viewer to show: the box (a closed POLYLINE, image pixels: column, row) and the
    key points on the key instance, the finding, the segment group's measurements, and the SEG segment it names."""

    key_sop: str
    polyline: np.ndarray
    key_points: list[np.ndarray]
    finding: str
    planar_groups: int
    measurements: dict[str, tuple[float, str]]  # the segment group's: name -> (value, unit code)
    referenced_seg: str


def reported_answer(report) -> ReportedAnswer:
    measurements = measurement_report(report)
    (volumetric,) = measurements.get_volumetric_roi_measurement_groups()
    planar = measurements.get_planar_roi_measurement_groups()
    (box,) = [  # the box: a closed POLYLINE tracked with the segment (the key points are groups of their own)
        group
        for group in planar
        if group.tracking_uid == volumetric.tracking_uid and group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    ]
    points = [group for group in planar if group.roi.graphic_type == hd.sr.GraphicTypeValues.POINT]
    return ReportedAnswer(
        key_sop=box.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
        polyline=np.asarray(box.roi.value, dtype=float),
        key_points=[np.asarray(group.roi.value, dtype=float).reshape(2) for group in points],
        finding=box.finding_type.meaning,
        planar_groups=len(planar),
        measurements={m.name.meaning: (float(m.value), m.unit.value) for m in volumetric.get_measurements()},
        referenced_seg=volumetric.referenced_segment.referenced_sop_instance_uid,
    )

"""Is a folder of DICOM slices one regular grid? A series with a missing slice or mixed orientation is refused.

A volume reader (GDCM/ITK) stacks whatever it gets: a missing slice silently stretches or squeezes the volume and a
tilted slice is put on the wrong plane, so a mask drawn on it would not match the patient. One file (a radiograph, a
single slice or a multi-frame object) has nothing to check.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import pydicom

from monailabel_app.core.errors import RequestError

ORIENTATION_TOLERANCE = 1e-4
SPACING_TOLERANCE = 0.01  # relative: gaps may differ by 1% (rounded positions in real scanners' headers)
# absolute, mm: positions written with 2 decimals put thin slices 0.62 and 0.63 mm apart for 0.625 mm (1.6%); a
# missing slice still stands out (a gap of twice the step)
ROUNDING_MM = 0.011


class InvalidSeriesError(RequestError):
    """The series can't be one volume; the message says why, in terms a PACS administrator can check."""


GEOMETRY_TAGS = ["ImageOrientationPatient", "ImagePositionPatient", "Rows", "Columns"]


def check_series_geometry(folder: str | Path) -> None:
    """Every file in `folder` is a slice of one series (a PACS download); their headers only are read."""
    files = [p for p in sorted(Path(folder).iterdir()) if p.is_file()]
    check_slice_geometry([pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=GEOMETRY_TAGS) for p in files])


def check_slice_geometry(headers: Sequence[pydicom.Dataset]) -> None:
    """`headers` (with `GEOMETRY_TAGS` at least) are the slices of one series, in any order."""
    if len(headers) <= 1:
        return
    orientations = _distinct([h.get("ImageOrientationPatient") for h in headers], "ImageOrientationPatient")
    if len(orientations) > 1:
        raise InvalidSeriesError(
            f"mixed orientation: the series' {len(headers)} slices have {len(orientations)} different "
            "ImageOrientationPatient values, so they are not one volume"
        )
    sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
    if len(sizes) > 1:
        raise InvalidSeriesError(f"the slices have different sizes {sorted(sizes)}, so they are not one volume")
    row, column = np.asarray(orientations[0][:3]), np.asarray(orientations[0][3:])
    normal = np.cross(row, column)
    positions = [_vector(h.get("ImagePositionPatient"), 3, "ImagePositionPatient", "their order") for h in headers]
    depths = np.sort([float(np.dot(p, normal)) for p in positions])
    gaps = np.diff(depths)
    if gaps.min() <= SPACING_TOLERANCE * max(gaps.max(), 1e-6):
        raise InvalidSeriesError("two slices share one position (duplicated instances or several stacks in one series)")
    step = float(np.median(gaps))
    irregular = np.flatnonzero(np.abs(gaps - step) > max(SPACING_TOLERANCE * step, ROUNDING_MM))
    if irregular.size:
        missing = int(round(float(np.sum(gaps[irregular] / step - 1))))
        first = int(irregular[0])
        raise InvalidSeriesError(
            f"missing slices: {len(headers)} slices {step:g} mm apart, but {gaps[first]:g} mm between the slices at "
            f"{depths[first]:g} and {depths[first + 1]:g} mm along the normal (about {max(missing, 1)} missing); "
            "send the whole series to the PACS again"
        )


def _distinct(values: List, name: str) -> List[np.ndarray]:
    distinct: List[np.ndarray] = []
    for value in values:
        vector = _vector(value, 6, name, "the volume's orientation")
        if not any(np.allclose(vector, seen, atol=ORIENTATION_TOLERANCE) for seen in distinct):
            distinct.append(vector)
    return distinct


def _vector(value, length: int, name: str, unknown: str) -> np.ndarray:
    """`length` finite numbers, or the refusal: a NaN position sorted last and passed every spacing test (GDCM then
    stacked the slices with a made-up spacing), a text or a 2-valued one failed as a bare numpy error."""
    try:
        vector = np.asarray(value if value is not None else [], float).reshape(-1)
    except (TypeError, ValueError):
        vector = np.empty(0)
    if vector.shape != (length,) or not np.all(np.isfinite(vector)):
        raise InvalidSeriesError(f"some slices have no {name} of {length} numbers, so {unknown} is unknown")
    return vector

"""Broken DICOM series for the PACS tests' error paths (a missing slice, mixed orientation), made from the sample
series of `monailabel_app/demo/sample_dicom.py`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pydicom.uid import generate_uid

from monailabel_app.demo.sample_dicom import CT_GEOMETRY, Series, _write_volume, ct_series
from monailabel_app.demo.sample_studies import ct_volume


def missing_slice_series(folder: Path) -> Series:
    """A CT series whose middle slice never reached the PACS."""
    series = ct_series(folder)
    gone = next(p for p in series.files if p.name == f"CT_{CT_GEOMETRY.slices // 2:03d}.dcm")
    series.files.remove(gone)
    gone.unlink()
    return series


def mixed_orientation_series(folder: Path) -> Series:
    """A CT series in which one slice is tilted: no single grid can hold it."""
    tilted = replace(CT_GEOMETRY, column_cosine=(0.0, 0.9848078, 0.1736482))
    series = Series("CT", generate_uid(), generate_uid(), CT_GEOMETRY, ct_volume())
    return _write_volume(series, Path(folder), signed=True, orientation_of=lambda k, g: tilted if k == 4 else g)

"""A source series' instances as MONAI Label's volume of it stacks them, and the one a slice index names: the SEG's
frames, the report's key slice and the answers' instance numbers all count slices this way."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset


def read_sources(series_dir: str) -> List[Dataset]:
    """The headers of the series' instances (no pixel data: the SEG and the report copy attributes, not pixels)."""
    sources = [pydicom.dcmread(str(path), stop_before_pixels=True) for path in sorted(Path(series_dir).iterdir())]
    if not sources:
        raise ValueError(f"no DICOM files in {series_dir}")
    return sources


def volume_order(sources: Sequence[Dataset]) -> List[Dataset]:
    """The instances in the order of the volume's slices (by position along the slice normal, as ITK stacks them)."""
    return sorted(sources, key=_position_along_normal)


def key_instance(sources: Sequence[Dataset], slice_index: Any) -> Optional[Dataset]:
    """The source instance at index `slice_index` of the volume MONAI Label made of the series; the only instance for
    a radiograph; None when the slice isn't known."""
    if len(sources) == 1:
        return sources[0]
    if isinstance(slice_index, bool) or not isinstance(slice_index, int):
        return None
    ordered = volume_order(sources)
    return ordered[slice_index] if 0 <= slice_index < len(ordered) else None


def _position_along_normal(ds: Dataset) -> float:
    orientation = ds.get("ImageOrientationPatient")
    position = ds.get("ImagePositionPatient")
    if orientation is None or position is None:
        return float(ds.get("InstanceNumber") or 0)
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    return float(np.dot(np.cross(row, column), np.asarray(position, float)))

"""Test support: a single-frame CT series stored again as one multi-frame image (a legacy-converted enhanced CT), as
some scanners store a series; the SEG and the report must handle both forms."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import highdicom
import pydicom


def enhanced_copy(files: Iterable[Path], target: Path) -> pydicom.Dataset:
    """The slices in `files` as one enhanced CT written to `target`/ct.dcm (a new folder); returns it."""
    slices = [pydicom.dcmread(str(path)) for path in sorted(files)]
    for one in slices:
        one.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]  # the legacy conversion requires it
    enhanced = highdicom.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=slices,
        series_instance_uid=highdicom.UID(),
        series_number=9,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
    )
    target.mkdir()
    enhanced.save_as(str(target / "ct.dcm"))
    return enhanced

"""OHIF's slice order, which the bundled OHIF (MONAI Label 0.8.5's) needs and does not say.

OHIF's MONAI Label panel copies the label's voxels straight into its segmentation volume, ignoring the file's
geometry, and OHIF's volumes (cornerstone3D) stack a series' slices from the one farthest along the slice normal to the
nearest: the reverse of ITK's (and so of this server's) volume order. Sent as is, a mask on slice k was drawn on slice
n-1-k, the mirror image through the middle of the series; and a correction drawn in OHIF was saved mirrored.

So OHIF's requests (its client alone sends `restore_label_idx: false`, with `output=image`) get the same label stored
from the last slice to the first: origin and direction say so, so any reader that honours geometry (3D Slicer, ITK,
the tests) sees the identical physical label, and OHIF sees its own order. OHIF's raw `label.bin` on save is read in
that order too (`upload_checks.py`). Checked in a real Chromium: the mask shows on the instance the answer names
(tests/test_ohif_browser.py).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import SimpleITK

OHIF_MARKER = "restore_label_idx"  # the one parameter only OHIF's MONAI Label client sends


def wants_viewer_order(options: Mapping[str, Any], output: str) -> bool:
    return output == "image" and options.get(OHIF_MARKER) is False


def store_in_viewer_order(label_file: str) -> None:
    """Rewrites a volume label with its slices reversed and its geometry adjusted (the same physical label)."""
    label = SimpleITK.ReadImage(label_file)
    if label.GetDimension() != 3 or label.GetSize()[2] < 2:
        return
    SimpleITK.WriteImage(label[:, :, ::-1], label_file, label_file.endswith((".gz", ".nrrd")))


def from_viewer_order(voxels: np.ndarray) -> np.ndarray:
    """OHIF's raw labelmap ((z, y, x), OHIF's slice order) in the volume's order."""
    return np.ascontiguousarray(voxels[::-1]) if voxels.ndim == 3 else np.ascontiguousarray(voxels)

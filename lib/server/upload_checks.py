"""An upload is stored only once it reads as what it claims to be.

- An image must decode (the header first, against the size limits) as a 2D picture or a 3D scalar volume: garbage,
  empty, truncated and 4D files are refused, so active learning never hands them out as the next sample.
- A label must decode as one value per voxel, whole numbers >= 0, on exactly its image's grid (size, spacing, origin,
  direction). An all-zero label is a valid label ("nothing here"). OHIF's raw `.bin` labelmap is put on the image's
  grid first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monailabel_app.core.errors import RequestError
from monailabel_app.imaging.image_limits import ImageLimits
from monailabel_app.imaging.medical_image import MedicalImage, read_medical_image, write_label

GEOMETRY_ATOL = 1e-3  # mm: NIfTI stores geometry as float32


def check_image_upload(path: Path, limits: ImageLimits) -> MedicalImage:
    return read_medical_image(str(path), limits)


def check_label_upload(label_path: Path, image_path: str, limits: ImageLimits) -> Path:
    """The label file to store (a converted copy for `.bin`), or RequestError saying what is wrong with it."""
    image = read_medical_image(image_path, limits)
    if label_path.name.endswith(".bin"):
        label_path = _raw_label_on_grid(label_path, image)
    label = read_medical_image(str(label_path), limits)
    name = label_path.name
    if label.grid.components != 1 or label.array.ndim != image.grid.dimension:
        raise RequestError(f"The label {name!r} has colour or vector pixels; a label has one whole number per voxel.")
    grid = image.grid_shape
    if label.array.shape != grid:
        raise RequestError(
            f"The label {name!r} is {list(label.array.shape)}; its image is {list(grid)}: not its label."
        )
    mine, theirs = label.geometry(), image.geometry()
    for key in ("spacing", "origin", "direction"):
        if not np.allclose(mine[key], theirs[key], atol=GEOMETRY_ATOL, rtol=1e-4):
            raise RequestError(f"The label {name!r} has another {key} than its image ({mine[key]} vs {theirs[key]}).")
    values = label.array
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise RequestError(f"The label {name!r} holds fractions; a label holds whole numbers (0 = background).")
    if values.size and values.min() < 0:
        raise RequestError(f"The label {name!r} holds negative values; a label holds 0 (background) or more.")
    return label_path


def _raw_label_on_grid(raw_file: Path, image: MedicalImage) -> Path:
    """OHIF sends the labelmap as raw uint8 voxels, x fastest, for the image's grid, its slices in the volume's order
    along the slice normal: ITK's, so the image's own (docs/pacs.md, What we found about OHIF)."""
    voxels = np.fromfile(raw_file, dtype=np.uint8)
    grid = image.grid_shape
    if voxels.size != int(np.prod(grid)):
        raise RequestError(
            f"The raw label has {voxels.size:,} voxels; its image has {int(np.prod(grid)):,} {list(grid)}."
        )
    target = raw_file.with_name(raw_file.name[: -len(".bin")] + ".nii.gz")
    write_label(voxels.reshape(grid), image, str(target))
    return target

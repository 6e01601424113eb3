"""Samples from an image file and its label file (a folder data set or the MONAI Label datastore).

A 2D image gives one sample. A volume is cut into axial slices (ITK's first array axis, so pixel (x, y) of slice k is
voxel (x, y, k)): only `slice_index` when one is recorded with the question (the slice the user asked about), else every
slice whose mask is non-empty, each one sample with the same question and the id "<id>:z<k>". Slices are windowed to
RGB with `to_display_rgb`, the ground truth comes from the slice's mask. A ground truth given with the record is used
instead only when the record means a single picture (a 2D image or an explicit slice), as a box can't span slices.

Negatives (`negatives=True`, for labels a clinician saved: the datastore): an all-zero mask is a deliberate "no
finding", a sample whose truth is `NEGATIVE_TRUTH` (on the recorded slice, else the middle one); and a volume whose mask
covers some slices also gives, with the same question, slices well outside them (at least `NEGATIVE_GAP` slices, and
at least the labelled range's own depth, from it), as many as it gave positives, spread evenly. Elsewhere an empty
mask is skipped, as before.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from monailabel_app.data.ground_truth import ground_truth_from_mask
from monailabel_app.data.load_report import (
    EMPTY_MASK,
    INVALID_RECORD,
    MISSING_FILE,
    MISSING_QUESTION,
    NO_GROUND_TRUTH,
    SHAPE_MISMATCH,
    UNREADABLE_IMAGE,
    SkippedSample,
)
from monailabel_app.data.sample import NEGATIVE_TRUTH, GroundingSample
from monailabel_app.imaging.medical_image import InvalidImageError, MedicalImage, read_medical_image
from monailabel_app.imaging.windowing import InvalidWindowError, to_display_rgb, window_bounds

NEGATIVE_GAP = 3  # slices between a labelled range and the nearest slice taken as a negative


def labelled_image_samples(
    sample_id: str,
    image_path: str,
    mask_path: Optional[str],
    question: object,
    *,
    slice_index: object = None,
    label_value: object = None,
    window: str = "auto",
    ground_truth: Optional[dict] = None,
    categories: Optional[dict] = None,
    extra: Optional[dict] = None,
    negatives: bool = False,
) -> list[GroundingSample]:
    """All samples of one image/label pair; raises `SkippedSample` when none can be made.

    `slice_index` None, "" or negative means "every labelled slice"; `label_value` picks one value of a multi-label
    map (default: any non-zero voxel); without a mask, `ground_truth` is required and the sample has no mask.
    """
    if not isinstance(question, str) or not question.strip():
        raise SkippedSample(MISSING_QUESTION, f"no question recorded for {os.path.basename(image_path)!r}")
    _check_window(window)
    image = _read(image_path, "image")
    label = _read(mask_path, "mask") if mask_path else None
    if label is None and ground_truth is None:
        raise SkippedSample(NO_GROUND_TRUTH, "neither a mask nor a box and points are given")
    foreground = _foreground(label, image, label_value) if label is not None else None
    explicit_slice = _explicit_slice(slice_index) if image.is_volume else None
    single_picture = not image.is_volume or explicit_slice is not None
    if foreground is None and not single_picture:
        raise SkippedSample(NO_GROUND_TRUTH, "a volume without a mask needs the slice its box and points belong to")

    def sample(k: Optional[int], mask: Optional[np.ndarray], truth: dict) -> GroundingSample:
        return GroundingSample(
            sample_id=f"{sample_id}:z{k}" if k is not None else sample_id,
            image=to_display_rgb(_plane(image.array, k), window),
            question=question.strip(),
            ground_truth=truth,
            mask=mask,
            **(categories or {}),
            extra={**(extra or {}), "image_path": image_path, "mask_path": mask_path, "slice": k, "window": window},
        )

    labelled = foreground is not None and bool(foreground.any())
    samples = []
    for k in _slices(image, foreground, explicit_slice, negatives):
        mask = None if foreground is None else _plane(foreground, k)
        if mask is not None and not mask.any():
            if not negatives or labelled:  # a negative is a wholly empty label, not an empty chosen slice
                raise SkippedSample(EMPTY_MASK, "the mask is empty" if k is None else f"slice {k} of the mask is empty")
            samples.append(sample(k, mask, dict(NEGATIVE_TRUTH)))
            continue
        truth = ground_truth if ground_truth is not None and single_picture else ground_truth_from_mask(mask)
        samples.append(sample(k, mask, truth))
    if negatives and image.is_volume and labelled:
        positives = sum(not s.is_negative for s in samples)
        samples += [sample(k, _plane(foreground, k), dict(NEGATIVE_TRUTH)) for k in _far_slices(foreground, positives)]
    return samples


def _far_slices(foreground: np.ndarray, count: int) -> list[int]:
    """Up to `count` slices well outside the labelled ones, spread evenly over what there is."""
    labelled = np.flatnonzero(foreground.reshape(foreground.shape[0], -1).any(axis=1))
    low, high = int(labelled.min()), int(labelled.max())
    gap = max(NEGATIVE_GAP, high - low + 1)
    far = [k for k in range(foreground.shape[0]) if k <= low - gap or k >= high + gap]
    if not far or count < 1:
        return []
    picks = np.unique(np.linspace(0, len(far) - 1, min(count, len(far))).round().astype(int))
    return [far[i] for i in picks]


def _check_window(window: str) -> None:
    try:
        window_bounds(np.zeros(1, np.float32), window)
    except InvalidWindowError as error:
        raise SkippedSample(INVALID_RECORD, str(error)) from None


def _read(path: str, what: str) -> MedicalImage:
    if not os.path.exists(path):
        raise SkippedSample(MISSING_FILE, f"the {what} file {path!r} does not exist")
    try:
        return read_medical_image(path)
    except InvalidImageError as error:
        raise SkippedSample(UNREADABLE_IMAGE, f"the {what} file: {error}") from None


def _foreground(label: MedicalImage, image: MedicalImage, label_value: object) -> np.ndarray:
    """Boolean mask on the image's grid; an RGB 2D label counts a pixel as foreground if any channel is non-zero."""
    values = label.array
    if not label.is_volume and values.ndim == 3:
        values = values.max(axis=-1)
    grid_shape = image.grid_shape
    if values.shape != grid_shape:
        raise SkippedSample(SHAPE_MISMATCH, f"mask grid {list(values.shape)} vs image grid {list(grid_shape)}")
    if label_value is None:
        return values > 0
    try:
        return values == float(label_value)
    except (TypeError, ValueError):
        raise SkippedSample(INVALID_RECORD, f"label value {label_value!r} is not a number") from None


def _explicit_slice(slice_index: object) -> Optional[int]:
    """The recorded slice as an int, None when "all labelled slices" is meant (None, "", negative)."""
    if slice_index is None or (isinstance(slice_index, str) and not slice_index.strip()):
        return None
    try:
        index = int(float(slice_index))
    except (TypeError, ValueError):
        raise SkippedSample(INVALID_RECORD, f"slice {slice_index!r} is not a whole number") from None
    return index if index >= 0 else None


def _slices(
    image: MedicalImage, foreground: Optional[np.ndarray], explicit_slice: Optional[int], negatives: bool = False
) -> list[Optional[int]]:
    """[None] for a 2D image; the recorded slice; else every slice with a labelled voxel (none: the middle slice, as a
    negative, when negatives are wanted)."""
    if not image.is_volume:
        return [None]
    if explicit_slice is not None:
        if explicit_slice >= image.num_slices:
            raise SkippedSample(
                INVALID_RECORD, f"slice {explicit_slice} is outside the volume's slices 0..{image.num_slices - 1}"
            )
        return [explicit_slice]
    labelled = [int(k) for k in np.flatnonzero(foreground.reshape(foreground.shape[0], -1).any(axis=1))]
    if not labelled and negatives:
        return [image.num_slices // 2]
    if not labelled:
        raise SkippedSample(EMPTY_MASK, "no slice of the mask has a labelled voxel")
    return labelled


def _plane(array: np.ndarray, k: Optional[int]) -> np.ndarray:
    return array if k is None else array[k]

"""Grounding on a medical image: pick the slice, window it, ground it, and put the mask back on the image's grid."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from monailabel_app.core.errors import RequestError
from monailabel_app.grounding.clicks import VoxelClicks
from monailabel_app.grounding.pipeline import GroundingPipeline, GroundingResult
from monailabel_app.grounding.propagation import Propagation, propagate
from monailabel_app.imaging.medical_image import MedicalImage
from monailabel_app.imaging.windowing import to_display_rgb
from monailabel_app.reasoning.prompt import validate_question

LABEL_VALUE = 1
MIDDLE_SLICE = -1  # the `slice` option's default: Slicer and OHIF show it as -1
SCOPES = ("slice", "volume")  # the answer's slice only, or carried through the volume from it (`propagation.py`)


class InvalidSliceError(RequestError):
    """The requested slice isn't in the volume."""


@dataclass
class GroundedImage:
    result: GroundingResult
    image: MedicalImage  # the input, whose geometry the label takes
    label: np.ndarray  # uint8, the image's grid: (H, W) or (Z, Y, X); only the grounded slice is filled
    slice_index: Optional[int]  # k of the slice used, None for 2D images
    picture: Optional[np.ndarray] = None  # (H, W, 3) uint8: the windowed slice the model saw (the answers page's)
    propagation: Optional[Propagation] = None  # scope volume: the slices the answer was carried to
    clicks: Optional[VoxelClicks] = None  # a point panel's clicks as read (`read_as_background` among them)

    def to_json(self) -> dict:
        """The result, plus voxel indices (i, j, k) for volumes so a viewer can place box and points in 3D."""
        data = self.result.to_json()
        data["slice"] = self.slice_index
        if self.slice_index is not None and self.result.box is not None:
            x1, y1, x2, y2 = data["box"]
            data["box_ijk"] = [[x1, y1, self.slice_index], [x2, y2, self.slice_index]]
            data["points_ijk"] = [[x, y, self.slice_index] for x, y in data["points"]]
        if self.propagation is not None:
            data["propagation"] = self.propagation.to_json(self.slice_index)
        return data


def resolve_slice(num_slices: int, requested: object) -> int:
    """`requested` None, '' or -1 means the middle slice; anything else must be a whole number naming a slice."""
    if requested is None or (isinstance(requested, str) and not requested.strip()):
        return num_slices // 2
    if isinstance(requested, bool):
        raise InvalidSliceError(f"The slice must be a whole number, got {requested!r}.")
    try:
        value = float(requested)
    except (TypeError, ValueError):
        raise InvalidSliceError(f"The slice must be a whole number, got {str(requested)[:40]!r}.") from None
    if not math.isfinite(value) or value != int(value):
        raise InvalidSliceError(f"The slice must be a whole number, got {str(requested)[:40]!r}.")
    index = int(value)
    if index == MIDDLE_SLICE:
        return num_slices // 2
    if not 0 <= index < num_slices:
        raise InvalidSliceError(
            f"Slice {index} is out of range: this volume has slices 0 to {num_slices - 1} (-1 = the middle one)."
        )
    return index


def ground_image(
    pipeline: Callable[[], GroundingPipeline],
    image: MedicalImage,
    question: str,
    slice_index: object = None,
    window: str = "auto",
    think: Optional[bool] = None,
    confidence_samples: int = 0,
    confidence_temperature: float = 1.0,
    scope: str = "slice",
    clicks: Optional[VoxelClicks] = None,
) -> GroundedImage:
    """`pipeline` is called only once the question, slice and window are known to be usable: a bad request is
    refused at once, without waiting for (or failing on) the models. `scope` volume carries a volume's answer through
    the volume from its slice; on a 2D picture it is the picture. `clicks` (a point panel's, already checked against
    the grid) name the slice when the request doesn't, and those on it refine the answer (`pipeline.py`)."""
    question = validate_question(question)
    if scope not in SCOPES:
        raise RequestError(f"scope must be one of {', '.join(SCOPES)}, got {str(scope)[:40]!r}")
    if image.is_volume:
        no_slice = slice_index is None or (isinstance(slice_index, str) and not slice_index.strip())
        if no_slice and clicks:
            slice_index = clicks.slice_index()
        k = resolve_slice(image.num_slices, slice_index)
        pixels = image.array[k]
    else:
        k, pixels = None, image.array
    picture = to_display_rgb(pixels, window)
    on_slice = None if clicks is None else clicks.on_slice(k)
    grounder = pipeline()
    asker = "" if clicks is None else clicks.asker  # whose earlier clicks on the answer these join
    result = grounder.ground(picture, question, think, confidence_samples, confidence_temperature, on_slice, asker)
    if clicks is not None and clicks.count() > len(on_slice):
        elsewhere = clicks.count() - len(on_slice)
        result.warnings.append(f"{elsewhere} click(s) on other slices were left aside: clicks refine slice {k} only")
    grid_shape = image.grid_shape
    label = np.zeros(grid_shape, dtype=np.uint8)
    carried = None
    if scope == "volume" and k is not None and result.mask is not None and result.mask.any():
        carried = propagate(
            grounder.segmenter,
            lambda z: to_display_rgb(image.array[z], window),
            image.num_slices,
            k,
            result.mask,
            result.mask_logits,
        )
        for z, mask in carried.masks.items():
            label[z][mask] = LABEL_VALUE
    elif result.mask is not None:
        (label[k] if k is not None else label)[result.mask] = LABEL_VALUE
    if scope == "volume" and k is None:
        result.warnings.append("scope volume applies to volumes; this is one picture")
    return GroundedImage(
        result=result, image=image, label=label, slice_index=k, picture=picture, propagation=carried, clicks=clicks
    )

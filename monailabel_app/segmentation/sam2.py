"""The Segmenter protocol on the `sam2` package's SAM2ImagePredictor (SAM2.1, MedSAM2), with a per-image cache.

MedSAM2 is SAM2.1 Hiera-Tiny run at 512 px (bowang-lab/MedSAM2's `sam2.1_hiera_t512.yaml` differs from the package's
`sam2.1_hiera_t.yaml` only in `image_size: 512` and the memory attention's RoPE `feat_sizes: [32, 32]`); its weights
load strictly into the package's model. The predictor's own transforms are MedSAM2's preprocessing too: a square
resize to the model's resolution, pixels / 255, then ImageNet mean/std.

Models are built from the package's YAML files with OmegaConf + `hydra.utils.instantiate`, not `build_sam2`:
`build_sam2` composes through Hydra's process-wide state, which `import sam2` initialises and which MONAI Label's own
SAM2 task clears and re-points at its model folder, so composing inside a server process can read the wrong folder.
"""

from __future__ import annotations

import re
import threading
from importlib.resources import files
from pathlib import Path
from typing import Callable, Generator, Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from sam2.modeling.sam2_base import SAM2Base
from sam2.sam2_image_predictor import SAM2ImagePredictor

from monailabel_app.segmentation.checkpoints import (
    CHECKPOINT_OPTION,
    SegmenterUnavailableError,
    load_weights,
    require_file,
)
from monailabel_app.segmentation.sam import SamSegmenter
from monailabel_app.segmentation.sam2_tracking import SliceFrames, tracking_state

SAM2_CONFIG_OPTION = "sam2_config"  # explicit SAM2.1 size for `build_sam2` when the file name does not tell it

# Official SAM2.1 checkpoint name part -> the package's config (sam2/build_sam.py HF_MODEL_ID_TO_FILENAMES).
SAM2_CONFIG_BY_SIZE = {
    "tiny": "sam2.1_hiera_t",
    "small": "sam2.1_hiera_s",
    "base_plus": "sam2.1_hiera_b+",
    "large": "sam2.1_hiera_l",
}
SAM2_SOURCE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"

MEDSAM2_CONFIG = "sam2.1_hiera_t"
MEDSAM2_IMAGE_SIZE = 512
MEDSAM2_HOW_TO_GET = (
    "get MedSAM2_latest.pt from https://huggingface.co/wanglab/MedSAM2 (see https://github.com/bowang-lab/MedSAM2)"
)

# What sam2.build_sam.build_sam2 adds by default (the paper built its segmenter with it). They only act when one mask
# is asked for, so with multimask_output=True they change nothing here; kept so the model equals the reference one.
BUILD_SAM2_DECODER_ARGS = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}
# What sam2.build_sam.build_sam2_video_predictor sets for tracking, except its hole filling (fill_hole_area=8), which
# needs the package's CUDA extension and is skipped without it: 0 gives the same masks with or without the extension.
VIDEO_PREDICTOR_ARGS = {
    "_target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
    "binarize_mask_from_pts_for_mem_enc": True,
    "fill_hole_area": 0,
}


class AnyResolutionImagePredictor(SAM2ImagePredictor):
    """SAM2ImagePredictor with backbone feature sizes derived from the model's resolution.

    The package hard-codes the 1024 px sizes (256, 128, 64), so a 512 px MedSAM2 fails in `set_image`; MedSAM2's own
    fork of this class derives them the same way (strides 4, 8, 16). At 1024 px nothing changes.
    """

    def __init__(self, sam_model: SAM2Base, **kwargs):
        super().__init__(sam_model, **kwargs)
        stride4_size = sam_model.image_size // 4
        self._bb_feat_sizes = [(stride4_size // 2**level,) * 2 for level in range(3)]


class Sam2Segmenter(SamSegmenter):
    """The same prompt recipe, embedding cache and lock as SamSegmenter, on SAM2's image predictor; one volume
    tracked at a time (a tracking session holds the features and memory bank of its slices: two at once would double
    the accelerator memory a request may take), while 2D requests go on."""

    def __init__(self, sam2_model: SAM2Base, name: str = "sam2", cache_size: int = 4):
        super().__init__(sam2_model, name, cache_size, predictor_class=AnyResolutionImagePredictor)
        self._tracking = threading.Lock()

    def track(
        self,
        render: Callable[[int], np.ndarray],
        num_slices: int,
        key: int,
        key_mask: np.ndarray,
        step: int,
        max_slices: int,
    ) -> Generator[tuple[int, np.ndarray, np.ndarray, float], None, None]:
        """The key slice's mask carried by the video predictor (`sam2_tracking`): (slice, picture, mask, score) for
        slices key + step, key + 2 step, ... up to the volume's edge or `max_slices` away; the caller stops reading
        when its stop rule says so. The score is the tracker's own belief that the target is on that slice (its object
        score, as a probability; under 0.5 the mask is empty)."""
        slices = [key + step * i for i in range(max_slices + 1) if 0 <= key + step * i < num_slices]
        if len(slices) < 2:
            return
        with self._tracking:  # released when the caller stops reading too (closing the generator exits this block)
            frames = SliceFrames(render, slices, self.model.image_size)
            state = tracking_state(self.model, frames, *key_mask.shape)
            self.model.add_new_mask(state, frame_idx=0, obj_id=1, mask=np.asarray(key_mask, dtype=bool))
            for index, _, logits in self.model.propagate_in_video(state, start_frame_idx=0):
                if index > 0:
                    output = state["output_dict_per_obj"][0]["non_cond_frame_outputs"][index]
                    score = torch.sigmoid(output["object_score_logits"].float()).item()
                    yield slices[index], frames.picture(index), (logits[0, 0] > 0).cpu().numpy(), score


def package_model_config(config_name: str, image_size: Optional[int] = None) -> DictConfig:
    """The `model` node of the installed package's configs/sam2.1/<config_name>.yaml, optionally at another size.

    The memory attention's RoPE grid follows the size (stride 16), as in MedSAM2's 512 px config; the image
    predictor never runs memory attention, but the model then equals the reference one.
    """
    config_file = files("sam2") / "configs" / "sam2.1" / f"{config_name}.yaml"
    if not config_file.is_file():
        raise ValueError(f"unknown SAM2.1 config {config_name!r}; choose one of {sorted(SAM2_CONFIG_BY_SIZE.values())}")
    model_config = OmegaConf.load(str(config_file)).model
    model_config.sam_mask_decoder_extra_args = dict(BUILD_SAM2_DECODER_ARGS)
    if image_size is not None:
        model_config.image_size = image_size
        layer = model_config.memory_attention.layer
        layer.self_attention.feat_sizes = layer.cross_attention.feat_sizes = [image_size // 16] * 2
    return model_config


def sam2_model(model_config: DictConfig) -> SAM2Base:
    """A SAM2VideoPredictor (random weights) from a `model` config node, instantiated without Hydra's global state."""
    video_config = OmegaConf.merge(model_config, VIDEO_PREDICTOR_ARGS)
    return instantiate(video_config, _recursive_=True).eval()


def build_sam2(
    kind: str, checkpoint: Optional[str], device: str, cache_size: int, sam2_config: Optional[str] = None
) -> Sam2Segmenter:
    """SAM2.1 Hiera-T/S/B+/L at 1024 px; the size comes from `sam2_config` or the official checkpoint file name."""
    how_to_get = f"get one of {', '.join(f'sam2.1_hiera_{size}.pt' for size in SAM2_CONFIG_BY_SIZE)} from {SAM2_SOURCE}"
    weights = checkpoint_path(kind, checkpoint, how_to_get)
    config_name = sam2_config or sam2_config_for_file(weights)
    return segmenter_from_weights(package_model_config(config_name), weights, kind, how_to_get, device, cache_size)


def build_medsam2(
    kind: str, checkpoint: Optional[str], device: str, cache_size: int, sam2_config: Optional[str] = None
) -> Sam2Segmenter:
    """MedSAM2: SAM2.1 Hiera-Tiny at 512 px with MedSAM2 weights (any of its released .pt files); it has one size,
    so `sam2_config` is not consulted."""
    weights = checkpoint_path(kind, checkpoint, MEDSAM2_HOW_TO_GET)
    model_config = package_model_config(MEDSAM2_CONFIG, MEDSAM2_IMAGE_SIZE)
    return segmenter_from_weights(model_config, weights, kind, MEDSAM2_HOW_TO_GET, device, cache_size)


def checkpoint_path(kind: str, checkpoint: Optional[str], how_to_get: str) -> Path:
    """The weights file, checked before a network is built (Hiera-L allocates ~900 MB of random weights first)."""
    if not checkpoint:
        raise SegmenterUnavailableError(
            f"the {kind} segmenter needs a weights file: {how_to_get}; set the '{CHECKPOINT_OPTION}' option to its path"
        )
    weights = Path(checkpoint)
    require_file(kind, weights, how_to_get)
    return weights


def sam2_config_for_file(weights: Path) -> str:
    """The config for an official SAM2.1 file name (sam2.1_hiera_tiny.pt ... sam2.1_hiera_large.pt)."""
    sizes = "|".join(SAM2_CONFIG_BY_SIZE)
    match = re.search(rf"hiera[_-]({sizes})(?![a-z])", weights.name.lower())
    if match is None:
        raise SegmenterUnavailableError(
            f"cannot tell the SAM2.1 model size from the file name {weights.name!r}: keep the official name "
            f"(sam2.1_hiera_<{sizes}>.pt) or name the config with {SAM2_CONFIG_OPTION} "
            f"(one of {sorted(SAM2_CONFIG_BY_SIZE.values())})"
        )
    return SAM2_CONFIG_BY_SIZE[match.group(1)]


def segmenter_from_weights(
    model_config: DictConfig, weights: Path, kind: str, how_to_get: str, device: str, cache_size: int
) -> Sam2Segmenter:
    model = sam2_model(model_config)
    load_weights(model, weights, kind, how_to_get)
    return Sam2Segmenter(model.to(device), name=kind, cache_size=cache_size)


SAM2_BUILDERS = {"sam2": build_sam2, "medsam2": build_medsam2}

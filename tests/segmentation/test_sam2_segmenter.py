"""SAM2.1 / MedSAM2 segmenters: a tiny random SAM2 built from the package's config through the same code path, and the
real MedSAM2 checkpoint when MEDSAM2_CHECKPOINT points at one."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hydra import initialize_config_dir, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from monailabel_app.segmentation.checkpoints import CHECKPOINT_OPTION, SegmenterUnavailableError
from monailabel_app.segmentation.factory import SAM2_KINDS, SEGMENTER_BUILDERS, build_segmenter
from monailabel_app.segmentation.sam2 import (
    MEDSAM2_CONFIG,
    MEDSAM2_IMAGE_SIZE,
    SAM2_BUILDERS,
    SAM2_CONFIG_OPTION,
    AnyResolutionImagePredictor,
    Sam2Segmenter,
    build_sam2,
    package_model_config,
    sam2_config_for_file,
    sam2_model,
    segmenter_from_weights,
)
from tests.support.encoder_probe import count_encoder_forwards

TINY_HIDDEN = 32  # prompt/mask-decoder width; the package's models use 256


def tiny_sam2_config(image_size: int = MEDSAM2_IMAGE_SIZE) -> DictConfig:
    """The package's Hiera-T config shrunk to ~0.65 M parameters: same classes and wiring, milliseconds on CPU.

    Hiera: 4 stages of 1, 1, 2, 1 blocks from width 8, global attention in block 3 (a non-pooling block).
    """
    config = package_model_config(MEDSAM2_CONFIG, image_size)
    trunk = config.image_encoder.trunk
    trunk.embed_dim, trunk.num_heads, trunk.stages, trunk.global_att_blocks = 8, 1, [1, 1, 2, 1], [3]
    trunk.window_pos_embed_bkg_spatial_size = [4, 4]
    neck = config.image_encoder.neck
    neck.d_model, neck.backbone_channel_list = TINY_HIDDEN, [64, 32, 16, 8]
    neck.position_encoding.num_pos_feats = TINY_HIDDEN
    memory_attention = config.memory_attention  # unused by the image predictor, but must fit the hidden width
    memory_attention.d_model, memory_attention.num_layers = TINY_HIDDEN, 1
    layer = memory_attention.layer
    layer.d_model, layer.dim_feedforward, layer.cross_attention.kv_in_dim = TINY_HIDDEN, 32, 16
    layer.self_attention.embedding_dim = layer.cross_attention.embedding_dim = TINY_HIDDEN
    memory_encoder = config.memory_encoder
    memory_encoder.in_dim, memory_encoder.out_dim, memory_encoder.position_encoding.num_pos_feats = TINY_HIDDEN, 16, 16
    memory_encoder.mask_downsampler.embed_dim = memory_encoder.fuser.layer.dim = TINY_HIDDEN
    memory_encoder.fuser.num_layers = 1
    return config


def tiny_sam2(image_size: int = MEDSAM2_IMAGE_SIZE, seed: int = 0):
    torch.manual_seed(seed)
    return sam2_model(tiny_sam2_config(image_size))


def bright_ellipse_slice(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Grey body, one bright elliptical lesion, mild noise; returns (RGB uint8, lesion mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    lesion = ((xx - 0.6 * width) / (0.1 * width)) ** 2 + ((yy - 0.45 * height) / (0.08 * height)) ** 2 <= 1
    gray = np.clip(np.where(lesion, 200.0, 90.0) + rng.normal(0, 6, (height, width)), 0, 255).astype(np.uint8)
    return np.stack([gray] * 3, axis=-1), lesion


def tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def two_points_inside(mask: np.ndarray) -> list[list[float]]:
    ys, xs = np.nonzero(mask)
    centre_x, centre_y = xs.mean(), ys.mean()
    spread = 0.3 * (xs.max() - xs.min())
    return [[centre_x - spread, centre_y], [centre_x + spread, centre_y]]


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_sam2()


@pytest.fixture
def tiny_segmenter(tiny_model) -> Sam2Segmenter:
    return Sam2Segmenter(tiny_model, name="tiny_sam2", cache_size=2)


# (a) the prompt recipe and frames, on a tiny random SAM2 at MedSAM2's 512 px


@pytest.mark.parametrize("height, width", [(300, 420), (420, 300)])
@pytest.mark.parametrize("prompt", ["joint", "box_only", "points_only"])
def test_matches_reference_predictor_call_in_input_frame(tiny_segmenter, height, width, prompt):
    """Same mask as the paper's own call: predict(points, labels [1, 1], box), multimask, highest score kept."""
    image, lesion = bright_ellipse_slice(height, width)
    box = tight_box(lesion) if prompt != "points_only" else None
    points = two_points_inside(lesion) if prompt != "box_only" else None

    output = tiny_segmenter.segment(image, box=box, points=points)

    reference = AnyResolutionImagePredictor(tiny_segmenter.model)
    reference.set_image(image)
    masks, scores, _ = reference.predict(
        point_coords=None if points is None else np.array(points),
        point_labels=None if points is None else np.array([1, 1]),
        box=None if box is None else np.array(box),
        multimask_output=True,
    )
    assert output.mask.dtype == bool and output.mask.shape == (height, width)
    assert np.array_equal(output.mask, masks[np.argmax(scores)] > 0)
    assert output.score == pytest.approx(float(scores.max()))


def test_features_follow_model_resolution(tiny_model):
    """The package's predictor assumes 1024 px features; at 512 they are 128, 64 and 32 (image embedding) wide."""
    predictor = AnyResolutionImagePredictor(tiny_model)
    predictor.set_image(bright_ellipse_slice(200, 260)[0])
    assert predictor.get_image_embedding().shape[-2:] == (32, 32)
    assert AnyResolutionImagePredictor(tiny_sam2(image_size=1024))._bb_feat_sizes == [(256, 256), (128, 128), (64, 64)]


def test_rejects_missing_prompt_and_non_rgb_image(tiny_segmenter):
    image, _ = bright_ellipse_slice(64, 64)
    with pytest.raises(ValueError, match="box or at least one point"):
        tiny_segmenter.segment(image, box=None, points=[])
    with pytest.raises(ValueError, match="RGB uint8"):
        tiny_segmenter.segment(image[..., 0], box=[1, 1, 20, 20])
    assert tiny_segmenter.encoder_calls == 0


# (b) the embedding cache, counted with a forward hook


def test_cache_runs_encoder_once_per_image_content(tiny_segmenter):
    forwards = count_encoder_forwards(tiny_segmenter)
    image, lesion = bright_ellipse_slice(120, 160)

    first = tiny_segmenter.segment(image, box=tight_box(lesion), points=two_points_inside(lesion))
    second = tiny_segmenter.segment(image.copy(), points=two_points_inside(lesion))
    assert tiny_segmenter.encoder_calls == 1 == forwards[0]
    assert not first.cache_hit and first.encode_s > 0 and first.decode_s > 0
    assert second.cache_hit and second.encode_s == 0.0

    other_image, _ = bright_ellipse_slice(120, 160, seed=7)
    assert not tiny_segmenter.segment(other_image, box=tight_box(lesion)).cache_hit
    assert tiny_segmenter.encoder_calls == 2 == forwards[0]


def test_medsam2_config_is_package_hiera_tiny_at_512():
    """bowang-lab/MedSAM2's sam2.1_hiera_t512.yaml: image_size 512 and a 32 x 32 RoPE grid; nothing else differs."""
    medsam2 = OmegaConf.to_container(package_model_config(MEDSAM2_CONFIG, MEDSAM2_IMAGE_SIZE))
    hiera_tiny = OmegaConf.to_container(package_model_config(MEDSAM2_CONFIG))
    assert (medsam2.pop("image_size"), hiera_tiny.pop("image_size")) == (512, 1024)
    for attention in ("self_attention", "cross_attention"):
        assert medsam2["memory_attention"]["layer"][attention].pop("feat_sizes") == [32, 32]
        assert hiera_tiny["memory_attention"]["layer"][attention].pop("feat_sizes") == [64, 64]
    assert medsam2 == hiera_tiny


def test_weights_file_round_trip_gives_the_same_masks(tiny_model, tmp_path):
    """A {"model": state_dict} file, as SAM2.1 and MedSAM2 ship, loads strictly into a fresh network."""
    weights = tmp_path / "tiny_sam2.pt"
    torch.save({"model": tiny_model.state_dict()}, weights)
    loaded = segmenter_from_weights(tiny_sam2_config(), weights, "medsam2", "test", "cpu", cache_size=1)
    image, lesion = bright_ellipse_slice(100, 140)
    prompt = dict(box=tight_box(lesion), points=two_points_inside(lesion))
    original = Sam2Segmenter(tiny_model).segment(image, **prompt)
    assert np.array_equal(loaded.segment(image, **prompt).mask, original.mask)


def test_weights_for_another_architecture_are_unavailable_not_a_crash(tmp_path):
    weights = tmp_path / "other.pt"
    torch.save({"model": tiny_sam2(image_size=1024).image_encoder.state_dict()}, weights)
    with pytest.raises(SegmenterUnavailableError, match=CHECKPOINT_OPTION):
        segmenter_from_weights(tiny_sam2_config(), weights, "medsam2", "test", "cpu", cache_size=1)


def test_model_builds_after_monai_label_repoints_hydra(tmp_path):
    """MONAI Label's SAM2 task clears Hydra and re-initialises it on its model folder; our configs don't use Hydra."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.2"):
            assert tiny_sam2().image_size == MEDSAM2_IMAGE_SIZE
    finally:
        GlobalHydra.instance().clear()
        initialize_config_module("sam2", version_base="1.2")  # the state `import sam2` leaves, for other users


@pytest.mark.parametrize(
    "file_name, config_name",
    [
        ("sam2.1_hiera_tiny.pt", "sam2.1_hiera_t"),
        ("sam2.1_hiera_small.pt", "sam2.1_hiera_s"),
        ("sam2.1_hiera_base_plus.pt", "sam2.1_hiera_b+"),
        ("SAM2.1-Hiera-Large.pt", "sam2.1_hiera_l"),
    ],
)
def test_sam2_size_from_official_file_name(tmp_path, file_name, config_name):
    assert sam2_config_for_file(tmp_path / file_name) == config_name


def test_sam2_file_name_without_size_asks_for_the_config(tmp_path):
    weights = tmp_path / "my_finetune.pt"
    weights.write_bytes(b"never read: the size is needed before the network is built")
    with pytest.raises(SegmenterUnavailableError, match=SAM2_CONFIG_OPTION):
        build_segmenter("sam2", str(weights))


def test_unknown_sam2_config_lists_the_known_ones(tmp_path):
    weights = tmp_path / "my_finetune.pt"
    weights.write_bytes(b"never read: the config is checked before the network is built")
    with pytest.raises(ValueError, match="sam2.1_hiera_b\\+"):
        build_sam2("sam2", str(weights), "cpu", 1, sam2_config="sam2.1_hiera_xl")


@pytest.mark.parametrize("kind, official_file", [("sam2", "sam2.1_hiera_tiny.pt"), ("medsam2", "MedSAM2_latest.pt")])
def test_missing_checkpoint_names_file_and_option(tmp_path, kind, official_file):
    with pytest.raises(SegmenterUnavailableError) as absent:
        build_segmenter(kind, str(tmp_path / "absent.pt"))
    assert CHECKPOINT_OPTION in str(absent.value) and "absent.pt" in str(absent.value)
    with pytest.raises(SegmenterUnavailableError, match=f"{official_file}.*{CHECKPOINT_OPTION}"):
        build_segmenter(kind, None)


def test_both_kinds_are_registered():
    assert set(SAM2_KINDS) == set(SAM2_BUILDERS) <= set(SEGMENTER_BUILDERS)


# (d) the real MedSAM2 weights, when present


@pytest.mark.skipif(not os.environ.get("MEDSAM2_CHECKPOINT"), reason="set MEDSAM2_CHECKPOINT to a MedSAM2 .pt file")
def test_real_medsam2_segments_synthetic_lesion():
    segmenter = build_segmenter("medsam2", os.environ["MEDSAM2_CHECKPOINT"])
    assert segmenter.model.image_size == MEDSAM2_IMAGE_SIZE
    image, lesion = bright_ellipse_slice(400, 520)
    box = tight_box(lesion)

    joint = segmenter.segment(image, box=box, points=two_points_inside(lesion))
    box_only = segmenter.segment(image.copy(), box=box)

    for output in (joint, box_only):
        dice = 2.0 * np.logical_and(output.mask, lesion).sum() / (output.mask.sum() + lesion.sum())
        assert dice > 0.8
    assert segmenter.encoder_calls == 1 and box_only.cache_hit

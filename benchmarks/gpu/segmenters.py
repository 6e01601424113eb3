"""The segmenter rows: SAM ViT-H's and SAM2.1 Hiera-T's image encoders (random weights), and the segmenter the
end-to-end row uses. segment-anything and sam2 are optional on a GPU host: without them these rows skip."""

from __future__ import annotations

from typing import Callable

import torch

from benchmarks.gpu.bench import Bench, Skip, require
from benchmarks.gpu.measuring import median, parameter_count, runs_note, timed
from benchmarks.gpu.plan import Plan


def build_sam(plan: Plan):
    """SAM ViT-H as `sam_model_registry` builds it (random weights) on a GPU; on the CPU the same modules with a
    two-block, 64-wide encoder at 256 px (segment_anything's own builder is fixed at 1024 px)."""
    require("segment_anything")
    from segment_anything import sam_model_registry
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    if not plan.smoke:
        with torch.device(plan.device):
            return sam_model_registry["vit_h"](checkpoint=None).to(plan.device).eval(), "SAM ViT-H"
    size, patch, prompt_dim = plan.sam_image_size, 16, 256
    encoder = ImageEncoderViT(
        img_size=size,
        patch_size=patch,
        embed_dim=64,
        depth=2,
        num_heads=2,
        global_attn_indexes=[1],
        window_size=14,
        out_chans=prompt_dim,
        use_rel_pos=True,
        qkv_bias=True,
    )
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(size // patch, size // patch),
            input_image_size=(size, size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )
    return sam.eval(), "tiny SAM (ViT-H's modules, 2 blocks of 64)"


def build_sam2(plan: Plan):
    """SAM2.1 Hiera-T from the sam2 package's config, as the app builds MedSAM2 (random weights), at 512 px on a GPU
    and at 128 px on the CPU."""
    require("sam2")
    require("segment_anything", "the app's SAM2 segmenter builds on its SAM one")
    from monailabel_app.segmentation.sam2 import package_model_config, sam2_model

    torch.manual_seed(0)
    with torch.device(plan.device):
        model = sam2_model(package_model_config("sam2.1_hiera_t", plan.sam2_image_size))
    return model.to(plan.device).eval(), "SAM2.1 Hiera-T"


def measure_encoder(plan: Plan, model, encode: Callable, label: str, size: int) -> tuple[str, str]:
    pixels = torch.randn(1, 3, size, size, device=plan.device)
    with torch.inference_mode():
        seconds = timed(plan, lambda: encode(pixels), plan.repeats)
    params = parameter_count(model.image_encoder)
    details = f"{label}, encoder {params / 1e6:.1f} M parameters, fp32 (as the app runs it), {size} x {size} input, "
    return f"{median(seconds) * 1000:.1f} ms", details + runs_note(seconds)


def measure_sam(bench: Bench) -> tuple[str, str]:
    sam, label = build_sam(bench.plan)
    return measure_encoder(bench.plan, sam, sam.image_encoder, label, bench.plan.sam_image_size)


def measure_sam2(bench: Bench) -> tuple[str, str]:
    model, label = build_sam2(bench.plan)
    # forward_image = the Hiera trunk, the FPN neck and the high-resolution projections: what set_image runs
    return measure_encoder(bench.plan, model, model.forward_image, label, bench.plan.sam2_image_size)


def end_to_end_segmenter(plan: Plan):
    """The paper's segmenter (MedSAM2 = SAM2.1 Hiera-T at 512) when sam2 is here, else SAM ViT-H."""
    try:
        from monailabel_app.segmentation.sam2 import Sam2Segmenter

        model, label = build_sam2(plan)
        return Sam2Segmenter(model, name="sam2.1_hiera_t"), f"{label} at {plan.sam2_image_size} px"
    except (Skip, ModuleNotFoundError):
        require("segment_anything", "no segmenter package for the end-to-end row")
        from monailabel_app.segmentation.sam import SamSegmenter

        model, label = build_sam(plan)
        return SamSegmenter(model, name="sam_vit_h"), f"{label} at {plan.sam_image_size} px"

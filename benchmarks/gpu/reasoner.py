"""The 7B reasoner built in memory: Qwen2.5-VL-7B's published sizes with random weights, on the device in its dtype,
wrapped in the app's own TransformersReasoner. Writing 16 GB of random weights to disk to load them back would time
the disk, not the GPU."""

from __future__ import annotations

import time

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from benchmarks.gpu.bench import Bench
from benchmarks.gpu.inputs import fitted_prompt, sample_picture
from benchmarks.gpu.measuring import synchronize
from benchmarks.gpu.plan import Plan
from monailabel_app.demo.tiny_models import build_config, build_generation_config, build_processor, build_tokenizer
from monailabel_app.reasoning.frame_bounds import QWEN_MIN_PIXELS, TRAINED_FRAME_MAX_PIXELS
from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner

# Qwen2.5-VL-7B-Instruct's published config.json (also MedReasoner-7B's and Lingshu-7B's): 8.29 B parameters.
QWEN25_VL_7B_TEXT = dict(
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=128000,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
)


QWEN25_VL_7B_VISION = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    out_hidden_size=3584,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
)


def reasoner_config(tokenizer, smoke: bool) -> Qwen2_5_VLConfig:
    """The tiny test config, or the 7B's sizes; token ids always come from the tokenizer the model runs with."""
    tiny = build_config(tokenizer)
    if smoke:
        return tiny
    text = dict(QWEN25_VL_7B_TEXT)
    text.update(
        bos_token_id=tiny.text_config.bos_token_id,
        eos_token_id=tiny.text_config.eos_token_id,
        pad_token_id=tiny.text_config.pad_token_id,
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(QWEN25_VL_7B_VISION),
        image_token_id=tiny.image_token_id,
        video_token_id=tiny.video_token_id,
        vision_start_token_id=tiny.vision_start_token_id,
        vision_end_token_id=tiny.vision_end_token_id,
    )


def build_reasoner_model(config: Qwen2_5_VLConfig, plan: Plan) -> Qwen2_5_VLForConditionalGeneration:
    """Random weights allocated on the device in the run's dtype (nothing is built on the CPU and copied over)."""
    torch.manual_seed(0)
    with torch.device(plan.device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=plan.dtype)
    return model.eval()


def reasoner_processor(tokenizer, plan: Plan):
    """The tiny processor (a ~1,000-token BPE with Qwen's special tokens and chat template); on a GPU with Qwen's
    real pixel bounds, so an 840 x 840 picture is 900 visual tokens as with the released checkpoints."""
    return (
        build_processor(tokenizer)
        if plan.smoke
        else build_processor(tokenizer, QWEN_MIN_PIXELS, TRAINED_FRAME_MAX_PIXELS)
    )


def in_memory_reasoner(model, processor) -> TransformersReasoner:
    """The app's TransformersReasoner (its constructor, lock, encoding and timing) around a model built here."""
    return TransformersReasoner("in-memory random weights", device=str(model.device), loaded=(model, processor))


def fix_answer_length(reasoner: TransformersReasoner, new_tokens: int) -> None:
    """Every answer exactly `new_tokens` long: random weights would otherwise stop wherever they happen to."""
    reasoner.max_new_tokens = new_tokens
    reasoner.model.generation_config.min_new_tokens = new_tokens


def reasoner_of(bench: Bench) -> TransformersReasoner:
    """The reasoner, built on first use (a failed build is each reasoner row's failure)."""
    if bench.reasoner is None:
        plan = bench.plan
        started = time.perf_counter()
        bench.tokenizer = build_tokenizer()
        bench.processor = reasoner_processor(bench.tokenizer, plan)
        bench.model = build_reasoner_model(reasoner_config(bench.tokenizer, plan.smoke), plan)
        bench.model.generation_config = build_generation_config(bench.tokenizer)  # Qwen's: repetition penalty 1.05
        bench.reasoner = in_memory_reasoner(bench.model, bench.processor)
        bench.prompt = fitted_prompt(bench.processor, plan.text_tokens)
        bench.picture = sample_picture(plan.picture_side)
        synchronize(plan)
        bench.figures["reasoner_build_s"] = time.perf_counter() - started
    return bench.reasoner

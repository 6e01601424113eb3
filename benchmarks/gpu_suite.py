"""One command that measures a GPU host: the 7B reasoner, the segmenters, a question end to end, batching, GRPO.

    python3.12 benchmarks/gpu_suite.py                    # a GPU host: real sizes, random weights, < 5 minutes
    python3.12 benchmarks/gpu_suite.py --out FILE         # the table's file (benchmarks/results/gpu_suite.md)
    .venv/bin/python benchmarks/gpu_suite.py --smoke      # tiny models on the CPU: the same code paths, for CI

Why this shape:
- A bare GPU host has torch, transformers, peft and lightning but no weights, no network and no MONAI Label, so every
  model is built here at its published size with random weights, and only the app's light modules are imported (none
  of them imports monai, monailabel or itk). Speed does not depend on what the weights say; answers do, so answer
  lengths are fixed (`min_new_tokens`) and the segmenter is given a fixed box instead of a parsed one.
- The reasoner is the app's own `TransformersReasoner` around a model built in memory (`loaded=`): writing 16 GB of
  random weights to disk to load them back would time the disk, not the GPU.
- Optional packages (segment-anything, sam2, trl, vllm) are looked for, never required: a row that needs a missing
  one says `skipped: <package> not installed`, a row that breaks says `failed: ...` (its traceback goes to stderr),
  and the other rows still run.
- `--smoke` runs every row's code with tiny models on the CPU, so the tests exercise the suite and it cannot rot
  while no GPU is at hand. Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # run as a script from a checkout: the app is not installed on a bare host

from monailabel_app.demo.tiny_models import (  # noqa: E402
    build_config,
    build_generation_config,
    build_processor,
    build_tokenizer,
)
from monailabel_app.reasoning import model_input  # noqa: E402
from monailabel_app.reasoning.frame_bounds import (  # noqa: E402
    QWEN_MAX_PIXELS,
    QWEN_MIN_PIXELS,
    TRAINED_FRAME_MAX_PIXELS,
)
from monailabel_app.reasoning.prompt import build_prompt  # noqa: E402
from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "gpu_suite.md"
EXIT_NO_GPU = 2

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

# HBM bandwidth by GPU name, TB/s (vendor figures). Names matched loosely; H100 NVL and GH200 differ from their
# namesakes, so they (and anything else not here) get a measured figure instead.
SPEC_BANDWIDTH_TBS = (
    (("H200",), 4.8, "H200"),
    (("H100", "PCIE"), 2.0, "H100 PCIe"),
    (("H100",), 3.35, "H100 SXM"),
    (("A100", "80GB"), 2.0, "A100 80GB"),
    (("A100", "40GB"), 1.55, "A100 40GB"),
    (("L40S",), 0.864, "L40S"),
)
NOT_IN_SPEC_TABLE = ("NVL", "GH200")

QUESTION = "Which structure would explain the dull percussion note over the right lower chest?"
WHEEL_NAMES = {"segment_anything": "segment-anything", "hydra": "hydra-core"}  # import name -> what to pip install

ROW_PREFILL = "reasoner prefill"
ROW_DECODE = "reasoner decode"
ROW_FRAME = "2048 x 2048 picture: own bound vs trained frame"
ROW_SAM = "SAM ViT-H image encoder"
ROW_SAM2 = "SAM2.1 Hiera-T image encoder"
ROW_END_TO_END = "one question end to end"
ROW_CONCURRENT = "16 questions: batched vs one by one"
ROW_VLLM = "transformers vs vLLM"
ROW_GRPO = "GRPO step, LoRA (this project's step)"
ROW_GRPO_TRL = "GRPO step, LoRA (TRL GRPOTrainer)"
ROW_FULL_FINETUNING = "GRPO step, full fine-tuning"
TABLE_ORDER = (
    ROW_PREFILL,
    ROW_DECODE,
    ROW_FRAME,
    ROW_SAM,
    ROW_SAM2,
    ROW_END_TO_END,
    ROW_CONCURRENT,
    ROW_VLLM,
    ROW_GRPO,
    ROW_GRPO_TRL,
    ROW_FULL_FINETUNING,
)


@dataclass(frozen=True)
class Plan:
    """Sizes and repeats of one run: real ones on a GPU, tiny ones on the CPU (`--smoke`)."""

    smoke: bool
    device: torch.device
    dtype: torch.dtype
    decode_tokens: int  # fixed answer length of the decode and end-to-end rows
    repeats: int  # timed runs after one warm-up
    concurrent_tokens: int  # answer length in the 16-question row (16 one-by-one calls must fit the budget)
    grpo_tokens: int
    sam_image_size: int
    sam2_image_size: int
    row_budget_s: float  # a row stops repeating once this is spent (it always finishes the run in progress)
    picture_side: int = 840  # 840 x 840 = 900 visual tokens, the app's trained frame
    large_side: int = 2048  # a radiograph at full size: 5,329 visual tokens at the processor's own bound
    large_cap: int = TRAINED_FRAME_MAX_PIXELS  # the app's default bound: 812 x 812, 841 visual tokens
    text_tokens: int = 150
    concurrent_questions: int = 16
    grpo_group: int = 8
    grpo_micro_batch: int = 2

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"


GPU_PLAN = Plan(
    smoke=False,
    device=torch.device("cuda"),
    dtype=torch.bfloat16,
    decode_tokens=128,
    repeats=3,
    concurrent_tokens=32,
    grpo_tokens=256,
    sam_image_size=1024,
    sam2_image_size=512,
    row_budget_s=40.0,
)
SMOKE_PLAN = Plan(
    smoke=True,
    device=torch.device("cpu"),
    dtype=torch.float32,
    decode_tokens=16,
    repeats=2,
    concurrent_tokens=4,
    grpo_tokens=12,
    sam_image_size=256,
    sam2_image_size=128,
    row_budget_s=10.0,
    large_side=448,
    large_cap=224 * 224,
)


class Skip(Exception):
    """A row that cannot run here; the message says why."""


@dataclass
class Row:
    name: str
    result: str
    details: str = ""
    seconds: float = 0.0


@dataclass
class Bench:
    """What the rows share: the plan, the prompt and picture, the reasoner once built, figures for comparisons."""

    plan: Plan
    tokenizer: object = None
    processor: object = None
    model: Optional[Qwen2_5_VLForConditionalGeneration] = None
    reasoner: Optional[TransformersReasoner] = None
    prompt: str = ""
    picture: Optional[np.ndarray] = None
    figures: dict = field(default_factory=dict)
    pictures_made: int = 0

    def fresh_picture(self) -> np.ndarray:
        """The picture with one pixel changed: segmenters cache embeddings by content, and each run must encode."""
        picture = self.picture.copy()
        picture[0, 0, :] = self.pictures_made % 256
        picture[0, 1, :] = self.pictures_made // 256 % 256
        self.pictures_made += 1
        return picture


# ---------------------------------------------------------------------------------------------------------------------
# Helpers: timing, memory, models built in code
# ---------------------------------------------------------------------------------------------------------------------


def synchronize(plan: Plan) -> None:
    if plan.on_gpu:
        torch.cuda.synchronize()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(plan: Plan, run: Callable[[], object], repeats: int, warmups: int = 1, budget_s: Optional[float] = None):
    """Seconds of each timed call (GPU work included) after `warmups` untimed ones; fewer than `repeats` when the
    row's budget runs out, never none."""
    deadline = time.perf_counter() + (plan.row_budget_s if budget_s is None else budget_s)
    for _ in range(warmups):
        run()
    seconds = []
    while len(seconds) < repeats and (not seconds or time.perf_counter() < deadline):
        synchronize(plan)
        started = time.perf_counter()
        run()
        synchronize(plan)
        seconds.append(time.perf_counter() - started)
    return seconds


def median(values) -> float:
    return statistics.median(list(values))


def runs_note(seconds: list) -> str:
    return f"median of {len(seconds)}" if len(seconds) > 1 else "one run"


def require(module: str, why: str = "") -> None:
    """Skip the row when an optional package is missing (looked up without importing it)."""
    if importlib.util.find_spec(module) is None:
        raise Skip(f"{WHEEL_NAMES.get(module, module)} not installed{f' ({why})' if why else ''}")


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def in_words(count: int) -> str:
    return f"{count / 1e9:.3g} B" if count >= 1e9 else f"{count / 1e6:.3g} M"


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


def fitted_prompt(processor, target_text_tokens: int) -> str:
    """The app's prompt cut so the whole chat text (system turn and template included) is about `target` tokens."""
    tokenizer = processor.tokenizer
    template_tokens = len(tokenizer(model_input.chat_text(processor, ""))["input_ids"]) - 1  # less the image slot
    prompt_ids = tokenizer(build_prompt(QUESTION, think=True))["input_ids"]
    return tokenizer.decode(prompt_ids[: max(1, target_text_tokens - template_tokens)])


def sample_picture(side: int) -> np.ndarray:
    """A chest-X-ray-like grey picture (content does not change the timing, only the size does)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side] / side
    body = 60 + 120 * np.exp(-(((xx - 0.5) / 0.35) ** 2 + ((yy - 0.55) / 0.45) ** 2))
    grey = np.clip(body + rng.normal(0, 8, (side, side)), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def fixed_prompt_for_segmenter(side: int) -> tuple[list[float], list[list[float]]]:
    """A box and two points inside it, as a parsed answer would give (random weights give no parseable answer)."""
    box = [0.3 * side, 0.35 * side, 0.6 * side, 0.7 * side]
    return box, [[0.4 * side, 0.5 * side], [0.5 * side, 0.55 * side]]


def decode_bytes_per_token(model, context_tokens: int) -> int:
    """What one decoding step reads from memory: the language model's weights (the input embedding is gathered, one
    row per token, not read whole) and lm_head, plus the KV cache of the context so far."""
    language = model.model.language_model
    weights = sum(p.numel() * p.element_size() for p in language.parameters())
    weights -= language.embed_tokens.weight.numel() * language.embed_tokens.weight.element_size()
    weights += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    text = model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    element = next(model.parameters()).element_size()
    kv_cache = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * context_tokens * element
    return weights + kv_cache


def spec_bandwidth(gpu_name: str) -> Optional[tuple[float, str]]:
    """Bytes/s and the table's label for a GPU the spec table knows, else None."""
    upper = gpu_name.upper().replace("-", " ")
    if any(word in upper for word in NOT_IN_SPEC_TABLE):
        return None
    for needles, terabytes, label in SPEC_BANDWIDTH_TBS:
        if all(needle in upper for needle in needles):
            return terabytes * 1e12, label
    return None


def measured_copy_bandwidth(gib: int = 1, copies: int = 10) -> float:
    """Bytes/s of a large device-to-device copy (each copy reads and writes the buffer once)."""
    source = torch.empty(gib * 2**30, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    target.copy_(source)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(copies):
        target.copy_(source)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000
    del source, target
    free_memory()
    return 2 * gib * 2**30 * copies / seconds


def gpu_bandwidth() -> tuple[float, str]:
    """The spec figure when the GPU is in the table (with the measured copy beside it), else the measured one."""
    name = torch.cuda.get_device_name()
    measured = measured_copy_bandwidth()
    spec = spec_bandwidth(name)
    if spec is None:
        return measured, f"measured: a device-to-device copy, {measured / 1e12:.2f} TB/s ({name} not in the table)"
    bandwidth, label = spec
    return bandwidth, f"{label} spec {bandwidth / 1e12:.2f} TB/s; a device copy measured {measured / 1e12:.2f} TB/s"


# ---------------------------------------------------------------------------------------------------------------------
# Segmenters
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Reasoner rows
# ---------------------------------------------------------------------------------------------------------------------


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


def measure_prefill(bench: Bench) -> tuple[str, str]:
    """One forward over the prompt (vision tower included), as generate's first step runs it."""
    reasoner = reasoner_of(bench)
    preprocessing = timed(bench.plan, lambda: reasoner.prepare_inputs(bench.picture, bench.prompt), 3, warmups=0)
    inputs, _ = reasoner.prepare_inputs(bench.picture, bench.prompt)
    with torch.inference_mode():
        seconds = timed(
            bench.plan, lambda: reasoner.model(**inputs, use_cache=True, logits_to_keep=1), bench.plan.repeats
        )
    tokens = int(inputs["input_ids"].shape[1])
    visual = int((inputs["input_ids"] == reasoner.model.config.image_token_id).sum())
    bench.figures["prompt_tokens"] = tokens
    side = bench.plan.picture_side
    details = (
        f"{tokens} prompt tokens ({visual} visual from one {side} x {side} picture, {tokens - visual} text) in "
        f"{median(seconds) * 1000:.1f} ms, {runs_note(seconds)}; the vision tower is included, the picture's "
        f"preprocessing on the CPU ({median(preprocessing) * 1000:.0f} ms) is not; "
        f"{in_words(parameter_count(reasoner.model))} parameters built in {bench.figures['reasoner_build_s']:.1f} s"
    )
    return f"{tokens / median(seconds):.1f} tokens/s", details


def prefill_seconds(plan: Plan, model, inputs) -> list[float]:
    with torch.inference_mode():
        return timed(plan, lambda: model(**inputs, use_cache=True, logits_to_keep=1), plan.repeats)


def measure_large_picture(bench: Bench) -> tuple[str, str]:
    """Prefill of one large picture at the processor's own bound and at the app's default cap (`frame_bounds`)."""
    reasoner = reasoner_of(bench)
    plan = bench.plan
    picture = sample_picture(plan.large_side)
    processor = build_processor(bench.tokenizer, QWEN_MIN_PIXELS, QWEN_MAX_PIXELS)
    figures = []
    for bound in (None, plan.large_cap):
        inputs, frame = model_input.encode(processor, picture, bench.prompt, None, bound)
        inputs = inputs.to(device=reasoner.model.device, dtype=reasoner.model.dtype)
        visual = int((inputs["input_ids"] == reasoner.model.config.image_token_id).sum())
        figures.append((frame.model_width, visual, median(prefill_seconds(plan, reasoner.model, inputs))))
        inputs = None
        free_memory()
    (own_side, own_tokens, own_s), (cap_side, cap_tokens, cap_s) = figures
    result = f"{own_s * 1000:.1f} ms vs {cap_s * 1000:.1f} ms (x{own_s / cap_s:.1f})"
    details = (
        f"one {plan.large_side} x {plan.large_side} picture and the prompt's text: at the processor's own bound "
        f"{own_side} x {own_side} ({own_tokens} visual tokens), at max_pixels {plan.large_cap} {cap_side} x {cap_side} "
        f"({cap_tokens} visual tokens); prefill medians"
    )
    return result, details


def measure_decode(bench: Bench) -> tuple[str, str]:
    """Greedy decoding through TransformersReasoner.generate, beside the floor that reading the weights sets."""
    plan, reasoner = bench.plan, reasoner_of(bench)
    fix_answer_length(reasoner, plan.decode_tokens)
    answers = []
    seconds = timed(plan, lambda: answers.append(reasoner.generate(bench.picture, bench.prompt)), plan.repeats)
    timed_answers = answers[-len(seconds) :]
    rate = median((a.new_tokens - 1) / a.decode_s for a in timed_answers)  # the first token comes out of prefill
    bench.figures["transformers_one_question_s"] = median(seconds)
    details = (
        f"{plan.decode_tokens} new tokens, greedy (min_new_tokens so it never stops early, Qwen's repetition penalty), "
        f"through TransformersReasoner.generate, {runs_note(seconds)}; whole call {median(seconds):.2f} s"
    )
    if not plan.on_gpu:
        return f"{rate:.1f} tokens/s; floor n/a (CPU)", details
    context = bench.figures.get("prompt_tokens", 1050) + plan.decode_tokens // 2
    per_token = decode_bytes_per_token(reasoner.model, context)
    bandwidth, source = gpu_bandwidth()
    floor = bandwidth / per_token
    details += (
        f"; floor = {per_token / 1e9:.2f} GB read per token (language model weights, lm_head, KV cache) / "
        f"bandwidth ({source}); measured = {rate / floor:.0%} of the floor"
    )
    return f"{rate:.1f} tokens/s; floor {floor:.1f} tokens/s", details


def measure_end_to_end(bench: Bench) -> tuple[str, str]:
    """One question as the app answers it: the reasoner's greedy answer, then the segmenter on the same picture."""
    plan, reasoner = bench.plan, reasoner_of(bench)
    segmenter, label = end_to_end_segmenter(plan)
    fix_answer_length(reasoner, plan.decode_tokens)
    box, points = fixed_prompt_for_segmenter(plan.picture_side)
    parts = []

    def one_question() -> None:
        picture = bench.fresh_picture()
        answer = reasoner.generate(picture, bench.prompt)
        mask = segmenter.segment(picture, box=box, points=points)
        parts.append((answer.prefill_s, answer.decode_s, mask.encode_s, mask.decode_s))

    seconds = timed(plan, one_question, plan.repeats)
    prefill, decode, encode, mask_decode = (median(p[i] for p in parts[-len(seconds) :]) for i in range(4))
    details = (
        f"reasoner prefill {prefill:.2f} s + decode {decode:.2f} s ({plan.decode_tokens} tokens) + segmenter encode "
        f"{encode:.3f} s + decode {mask_decode:.3f} s ({label}); {runs_note(seconds)}. Random weights: the answer does "
        "not parse, so the segmenter gets a fixed box and two points"
    )
    return f"{median(seconds):.2f} s", details


def measure_concurrent(bench: Bench) -> tuple[str, str]:
    """16 questions in one padded generate call (`generate_many`, what BatchingReasoner runs) against 16 calls."""
    plan, reasoner = bench.plan, reasoner_of(bench)
    count = plan.concurrent_questions
    fix_answer_length(reasoner, plan.concurrent_tokens)
    pictures = [bench.fresh_picture() for _ in range(count)]
    prompts = [bench.prompt] * count

    def one_by_one() -> None:
        for picture, prompt in zip(pictures, prompts):
            reasoner.generate(picture, prompt)

    alone = timed(plan, one_by_one, repeats=1, warmups=0)
    # two batched runs when the budget allows: the first also grows the allocator's pool for 16 rows
    batched = timed(plan, lambda: reasoner.generate_many(pictures, prompts), repeats=2, warmups=0)
    batched_rate, alone_rate = count / min(batched), count / median(alone)
    bench.figures["transformers_batched_questions_per_s"] = batched_rate
    details = (
        f"{count} different pictures, {plan.concurrent_tokens} new tokens each; batched: one generate_many call "
        f"(best of {len(batched)}), one by one: {count} generate calls in a row (one run)"
    )
    return f"{batched_rate:.2f} vs {alone_rate:.2f} questions/s (x{batched_rate / alone_rate:.2f})", details


def measure_vllm(bench: Bench) -> tuple[str, str]:
    """vLLM with dummy (random) weights of the same config, one question and 16 together, against transformers.

    Untested where written (no vLLM in the app's environment: its pins clash with the app's). Runs last: it frees the
    transformers model and keeps its own GPU memory until the process ends."""
    require("vllm", "its wheel is too big to carry; the app runs it in its own environment behind `vllm serve`")
    if not bench.plan.on_gpu:
        raise Skip("vLLM needs a CUDA GPU")
    import vllm

    plan, reasoner = bench.plan, reasoner_of(bench)
    config, processor = reasoner.model.config, bench.processor
    config.architectures = [type(reasoner.model).__name__]  # what vLLM picks its model class by
    bench.model = bench.reasoner = reasoner = None
    free_memory()
    request = {
        "prompt": model_input.chat_text(processor, bench.prompt),
        "multi_modal_data": {"image": Image.fromarray(bench.picture)},
    }
    with tempfile.TemporaryDirectory(prefix="gpu-suite-vllm-") as folder:
        config.save_pretrained(folder)  # no weights: load_format="dummy" makes random ones of this config
        processor.save_pretrained(folder)
        engine = vllm.LLM(
            model=folder,
            load_format="dummy",
            dtype="bfloat16",
            max_model_len=4096,
            gpu_memory_utilization=0.85,
            limit_mm_per_prompt={"image": 1},
            seed=0,
        )

        def fixed_length(tokens: int):
            return vllm.SamplingParams(temperature=0.0, max_tokens=tokens, min_tokens=tokens, ignore_eos=True)

        one_params, many_params = fixed_length(plan.decode_tokens), fixed_length(plan.concurrent_tokens)
        one = timed(plan, lambda: engine.generate([request], one_params, use_tqdm=False), plan.repeats)
        many = [request] * plan.concurrent_questions
        batched = timed(plan, lambda: engine.generate(many, many_params, use_tqdm=False), repeats=2, warmups=0)
        engine = None  # vLLM keeps much of its memory until the process ends; this row runs last
    free_memory()
    vllm_rate = plan.concurrent_questions / min(batched)
    hf_rate = bench.figures.get("transformers_batched_questions_per_s", float("nan"))
    hf_one = bench.figures.get("transformers_one_question_s", float("nan"))
    details = (
        f"vLLM {vllm.__version__}, dummy weights, same config and prompt; one question {median(one):.2f} s "
        f"({plan.decode_tokens} tokens) against transformers' {hf_one:.2f} s; 16 questions: vLLM's batching against "
        "transformers' generate_many"
    )
    return f"{vllm_rate:.2f} vs {hf_rate:.2f} questions/s at 16 (x{vllm_rate / hf_rate:.2f})", details


# ---------------------------------------------------------------------------------------------------------------------
# GRPO rows
# ---------------------------------------------------------------------------------------------------------------------


def grpo_settings(plan: Plan):
    """The hospital preset (one GPU, LoRA) with the suite's group size and answer length, one prompt per step."""
    from monailabel_app.training.config import HOSPITAL_PRESET

    return dataclasses.replace(
        HOSPITAL_PRESET,
        group_size=plan.grpo_group,
        max_new_tokens=plan.grpo_tokens,
        prompts_per_step=1,
        mini_batch_prompts=1,
        micro_batch_size=plan.grpo_micro_batch,
    )


def lora_config(settings):
    from peft import LoraConfig

    from monailabel_app.training.module import language_model_lora_pattern  # imports lightning (on the GPU host)

    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=language_model_lora_pattern(settings.lora_target_modules),
    )


def grpo_step(bench: Bench, policy, optimizer, settings, new_tokens: int) -> dict[str, float]:
    """One GRPO step on one prompt, as GRPOModule.training_step runs it (rollout, reference log-probs, one update of
    micro-batches, clipping, AdamW), with the project's rollout and loss functions; rewards are random."""
    from monailabel_app.training.loss import group_advantages, grpo_loss
    from monailabel_app.training.rollout import (
        encode_prompt,
        eval_mode,
        response_log_probs,
        sample_responses,
        sampling_config,
        vision_token_ids,
    )

    plan, model = bench.plan, bench.model
    suppressed = vision_token_ids(model.config)
    generation = sampling_config(
        model.generation_config, settings.temperature, new_tokens, settings.group_size, suppressed
    )
    generation.min_new_tokens = new_tokens
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if plan.on_gpu else nullcontext()  # bf16-mixed
    clock = {}
    synchronize(plan)
    started = time.perf_counter()
    with autocast:
        prompt = encode_prompt(
            bench.processor, bench.fresh_picture(), bench.prompt, settings.min_pixels, settings.max_pixels
        )
        prompt.features = prompt.features.to(plan.device)
        with eval_mode(policy):
            response_ids, response_mask = sample_responses(policy, prompt, generation)
        rewards = torch.rand(1, settings.group_size)  # random weights: nothing parses, so the rewards are made up
        advantages = group_advantages(rewards, settings.advantage_eps)[0].to(plan.device)
        synchronize(plan)
        clock["rollout"] = time.perf_counter() - started
        parts = [
            slice(i, i + settings.micro_batch_size) for i in range(0, settings.group_size, settings.micro_batch_size)
        ]

        def log_probs(part: slice) -> torch.Tensor:
            ids, mask = response_ids[part], response_mask[part]
            return response_log_probs(policy, prompt, ids, mask, settings.temperature, suppressed)

        with torch.no_grad(), eval_mode(policy), policy.disable_adapter():  # the reference: adapters off
            reference = torch.cat([log_probs(part) for part in parts])
        synchronize(plan)
        clock["reference"] = time.perf_counter() - started - clock["rollout"]
        optimizer.zero_grad()
        tokens = int(response_mask.sum())
        for part in parts:
            current = log_probs(part)
            loss = grpo_loss(
                current,
                current.detach(),  # one update per rollout batch: the sampling policy is the one being updated
                advantages[part],
                response_mask[part],
                ref_log_probs=reference[part],
                clip_eps=settings.clip_eps,
                dual_clip_c=settings.dual_clip_c,
                kl_coef=settings.kl_coef,
                kl_estimator=settings.kl_estimator,
                token_normaliser=tokens,
            )
            loss.loss.backward()
        synchronize(plan)
    clock["forward_backward"] = time.perf_counter() - started - clock["rollout"] - clock["reference"]
    trainable = [p for p in policy.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
    optimizer.step()
    synchronize(plan)
    clock["total"] = time.perf_counter() - started
    clock["optimizer"] = clock["total"] - clock["rollout"] - clock["reference"] - clock["forward_backward"]
    return clock


def measure_grpo(bench: Bench) -> tuple[str, str]:
    """LoRA GRPO on the 7B: one short warm-up step, then one timed step of the full length."""
    require("peft")
    require("lightning", "the trainer's module, whose LoRA targets this row uses")
    from peft import get_peft_model

    plan = bench.plan
    reasoner_of(bench)
    settings = grpo_settings(plan)
    model, policy = bench.model, None
    try:
        if settings.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        policy = get_peft_model(model, lora_config(settings))
        policy.train()
        trainable = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
        grpo_step(bench, policy, optimizer, settings, new_tokens=min(8, settings.max_new_tokens))  # warm-up
        clock = grpo_step(bench, policy, optimizer, settings, new_tokens=settings.max_new_tokens)
    finally:
        bench.model = policy.unload() if policy is not None else model  # adapters out: later rows get the plain model
        bench.model.activation_checkpointing_disable()
        bench.model.eval()
        bench.reasoner.model = bench.model
    details = (
        f"rollout {clock['rollout']:.2f} s ({settings.group_size} answers x {settings.max_new_tokens} tokens sampled) "
        f"+ reference log-probs {clock['reference']:.2f} s + policy forward/backward {clock['forward_backward']:.2f} s "
        f"(micro-batches of {settings.micro_batch_size}, gradient checkpointing) + clip and AdamW "
        f"{clock['optimizer']:.3f} s; LoRA r={settings.lora_r} on the language model's projections "
        f"({in_words(sum(p.numel() for p in trainable))} trainable), kl_coef {settings.kl_coef}; the project's "
        "rollout and loss functions (training/rollout.py, training/loss.py) in the order GRPOModule.training_step "
        "calls them, without Lightning's Trainer; random rewards (random weights give no parseable answers)"
    )
    return f"{clock['total']:.2f} s per step", details


def measure_trl_grpo(bench: Bench) -> tuple[str, str]:
    """TRL's GRPOTrainer on the same model, group size, lengths and LoRA: two steps, the second timed.

    Untested where written (trl was not installed there); keyword arguments this trl version lacks are left out."""
    require("trl", "bring its wheel: it is small")
    require("datasets", "trl needs it")
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig as TrlGRPOConfig
    from trl import GRPOTrainer

    plan = bench.plan
    reasoner_of(bench)
    settings = grpo_settings(plan)

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.started, self.seconds = 0.0, []

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize(plan)
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(plan)
            self.seconds.append(time.perf_counter() - self.started)

    def random_reward(completions, **kwargs) -> list[float]:
        return torch.rand(len(completions)).tolist()

    records = [{"prompt": model_input.user_turn(bench.prompt), "image": Image.fromarray(bench.picture)}] * 4
    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="gpu-suite-trl-") as folder:
        wanted = dict(
            output_dir=folder,
            per_device_train_batch_size=settings.micro_batch_size,
            gradient_accumulation_steps=settings.group_size // settings.micro_batch_size,
            num_generations=settings.group_size,
            max_completion_length=settings.max_new_tokens,
            max_prompt_length=None,
            generation_kwargs={"min_new_tokens": settings.max_new_tokens},
            temperature=settings.temperature,
            top_k=0,
            top_p=1.0,
            max_steps=2,
            learning_rate=settings.lr,
            beta=settings.kl_coef,
            epsilon=settings.clip_eps,
            bf16=plan.on_gpu,
            use_cpu=not plan.on_gpu,
            gradient_checkpointing=settings.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
            shuffle_dataset=False,
            dataloader_num_workers=0,
            seed=0,
        )
        known = {f.name for f in dataclasses.fields(TrlGRPOConfig)}
        trainer = GRPOTrainer(
            model=bench.model,
            reward_funcs=random_reward,
            args=TrlGRPOConfig(**{k: v for k, v in wanted.items() if k in known}),
            train_dataset=Dataset.from_list(records),
            processing_class=bench.processor,
            peft_config=lora_config(settings),
            callbacks=[clock],
        )
        try:
            trainer.train()
        finally:
            trained = trainer.model
            bench.model = trained.unload() if hasattr(trained, "unload") else trained
            bench.model.activation_checkpointing_disable()
            bench.model.eval()
            bench.reasoner.model = bench.model
            del trainer
    details = (
        f"trl {importlib.import_module('trl').__version__}: {settings.group_size} answers x "
        f"{settings.max_new_tokens} tokens, micro-batches of {settings.micro_batch_size}, the same LoRA and beta "
        f"{settings.kl_coef}; step 2 of 2 (step 1 warms up)"
    )
    return f"{clock.seconds[-1]:.2f} s per step", details


def full_finetuning_row(bench: Bench) -> tuple[str, str]:
    """Not run, with the arithmetic: the 7B's parameter count from its config (built on the meta device, no memory)."""
    tokenizer = bench.tokenizer or build_tokenizer()
    with torch.device("meta"):
        parameters = parameter_count(Qwen2_5_VLForConditionalGeneration._from_config(reasoner_config(tokenizer, False)))
    needed = 16 * parameters  # bf16 weights (2) and gradients (2), fp32 master weights (4), two fp32 Adam moments (8)
    here = ""
    if bench.plan.on_gpu:
        here = f" (this GPU: {torch.cuda.get_device_properties(0).total_memory / 1e9:.0f} GB)"
    reason = (
        f"not run: a 7B with Adam states (~{needed / 1e9:.0f} GB+ for {parameters / 1e9:.2f} B parameters at 16 bytes "
        f"each, before activations) does not fit one GPU{here} without offload"
    )
    return reason, "DeepSpeed ZeRO-Offload would move ~12 bytes a parameter to host memory; not timed here"


# ---------------------------------------------------------------------------------------------------------------------
# The run and the table
# ---------------------------------------------------------------------------------------------------------------------

EXECUTION_ORDER = (
    (ROW_PREFILL, measure_prefill),
    (ROW_DECODE, measure_decode),
    (ROW_FRAME, measure_large_picture),
    (ROW_SAM, measure_sam),
    (ROW_SAM2, measure_sam2),
    (ROW_END_TO_END, measure_end_to_end),
    (ROW_CONCURRENT, measure_concurrent),
    (ROW_GRPO, measure_grpo),
    (ROW_GRPO_TRL, measure_trl_grpo),
    (ROW_FULL_FINETUNING, full_finetuning_row),
    (ROW_VLLM, measure_vllm),  # last: it frees the transformers model and vLLM keeps its memory
)


def one_line(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "/")


def run_row(bench: Bench, name: str, measure: Callable[[Bench], tuple[str, str]]) -> Row:
    """A row's figures, or `skipped: reason`, or `failed: error` (traceback to stderr); never an exception."""
    print(f"[gpu_suite] {name} ...", file=sys.stderr, flush=True)
    if bench.plan.on_gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        result, details = measure(bench)
        if bench.plan.on_gpu:
            details += f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    except Skip as reason:
        result, details = f"skipped: {reason}", ""
    except ModuleNotFoundError as error:
        result, details = f"skipped: {WHEEL_NAMES.get(error.name, error.name)} not installed", ""
    except Exception as error:  # a broken row must not take the other rows down
        traceback.print_exc()
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        result, details = f"failed: {type(error).__name__}: {message[:300]}", "traceback on stderr"
    finally:
        free_memory()
    return Row(name, one_line(result), one_line(details), time.perf_counter() - started)


def header(plan: Plan) -> list[str]:
    if plan.on_gpu:
        device = torch.cuda.get_device_name()
        mode = "GPU: real sizes, random weights (Qwen2.5-VL-7B architecture in bf16, SAM ViT-H, SAM2.1 Hiera-T)"
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        mode = "smoke: tiny models on the CPU; it checks the code paths, its numbers mean nothing"
    return [
        f"# GPU suite, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"- device: {device}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}",
        f"- mode: {mode}",
        f"- prompt: one {plan.picture_side} x {plan.picture_side} picture and about {plan.text_tokens} text tokens "
        "(the app's prompt, cut), a tiny BPE tokenizer with Qwen's special tokens",
        "",
    ]


def table(rows: dict[str, Row]) -> list[str]:
    lines = ["| row | result | details | row s |", "| --- | --- | --- | --- |"]
    for name in TABLE_ORDER:
        row = rows[name]
        lines.append(f"| {row.name} | {row.result} | {row.details} | {row.seconds:.1f} |")
    return lines


def run(plan: Plan) -> tuple[list[str], dict[str, Row]]:
    bench = Bench(plan)
    rows = {name: run_row(bench, name, measure) for name, measure in EXECUTION_ORDER}
    return header(plan) + table(rows), rows


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the code paths (CI)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the table's file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.smoke and not torch.cuda.is_available():
        print(
            "gpu_suite: no CUDA GPU here (torch.cuda.is_available() is False). Run it on a GPU host, or pass --smoke "
            "to check its code paths with tiny models on the CPU.",
            file=sys.stderr,
        )
        return EXIT_NO_GPU
    transformers.logging.set_verbosity_error()  # generation-flag warnings would bury the table
    if args.smoke:
        torch.set_num_threads(1)  # toy-sized models gain nothing from threads; on a busy 2-core machine they cost ~4x
    started = time.perf_counter()
    lines, _ = run(SMOKE_PLAN if args.smoke else GPU_PLAN)
    lines += ["", f"Whole suite: {time.perf_counter() - started:.0f} s."]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"[gpu_suite] table written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

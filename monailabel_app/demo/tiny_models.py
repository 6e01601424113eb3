"""Tiny random-weight Qwen2.5-VL checkpoints, built offline in code, for tests and the offline demo.

No model hub is reachable here, yet the reasoner code must be exercised exactly as with Lingshu-7B or
MedReasoner-7B. So this writes a real HF-format folder (config, safetensors, tokenizer, processor, chat template,
generation config) with transformers' own classes, only tiny: 2 text layers, hidden 64, a 2-block vision tower, a
byte-level BPE vocabulary of about a thousand tokens trained here on a built-in corpus, and images resized to at most
~280 px per side. The "format-tuned" variant is additionally taught, by a short seeded teacher-forced run, to answer
every image/question with one fixed text, which gives end-to-end tests a deterministic "ok" path.

The folder carries `tiny_model.json` so that the app can tell users the reasoner is a toy.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX  # digits split singly, as in Qwen

from monailabel_app.reasoning import model_input
from monailabel_app.reasoning.identity import TINY_MODEL_MARKER
from monailabel_app.reasoning.prompt import build_prompt

ANSWER_MARGIN = 3.0  # logits by which every answer token must win under teacher forcing before tuning stops

# The answer the format-tuned model learns; coordinates lie inside any frame the tiny processor produces (>= 112 px).
DEFAULT_ANSWER_TEXT = (
    "<think>The question points to a focal region; the brightest compact area is the most likely target.</think>"
    '<answer>{"bbox": [30, 40, 90, 100], "points_1": [50, 60], "points_2": [70, 80]}</answer>'
)

# Qwen2.5-VL's added tokens, in its id order (151643...). The first 14 are special; the rest are plain added tokens.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_PLAIN_ADDED_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]

# Qwen2.5-VL's chat template (default system turn; image/video placeholders; generation prompt).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Small enough for fast CPU tests, large enough that images keep their aspect ratio: 112..280 px per side typically.
TINY_MIN_PIXELS = 112 * 112
TINY_MAX_PIXELS = 280 * 280

# Text the BPE merges are learned from: prompt-like and answer-like text, so common words are whole tokens.
_TRAINING_CORPUS = [
    "You are a helpful assistant.",
    "This is a medical image localisation task over X-ray, CT, MRI, ultrasound, endoscopy, fundus, pathology, "
    "dermoscopy and mammography images. The question only hints at the target: infer the clinical focus first.",
    "Interpret the vague question with clinical knowledge. Gather visual evidence: shape, edges, density, symmetry, "
    "texture. Settle on the single most likely region. Give only the location, no diagnosis. Prefer visual evidence "
    "when in doubt.",
    "Output exactly one <think> </think> block and then one <answer> </answer> block. The answer is a JSON object "
    'with "bbox" (the tightest box), "points_1" and "points_2" (two distinct points strictly inside the target).',
    "<think> ... </think><answer>{'bbox': [xmin, ymin, xmax, ymax], 'points_1': [x1, y1], 'points_2': [x2, y2]}"
    "</answer>",
    DEFAULT_ANSWER_TEXT,
    "Where is the abnormality that could explain the patient's shortness of breath?",
    "Which region would a radiologist look at first for the cause of the pain? Show the lesion, the nodule, the "
    "polyp, the tumour, the organ, the vessel, the optic disc, the cell cluster.",
    "The quick brown fox jumps over the lazy dog. 0123456789 () [] {} <> , . ; : ! ? ' \" - _ / \\ | @ # $ % ^ & * + =",
]


def build_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE trained here (every byte is in the alphabet, so any text round-trips) with Qwen's tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, min_frequency=1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_TRAINING_CORPUS, trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    vocab = dict(trained["vocab"])
    for token in QWEN_SPECIAL_TOKENS + QWEN_PLAIN_ADDED_TOKENS:  # appended after the BPE vocabulary, as in Qwen's
        vocab[token] = len(vocab)

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        eos_token="<|im_end|>",  # the chat models stop at the end of the assistant turn
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=32768,
        extra_special_tokens=QWEN_SPECIAL_TOKENS[1:],
    )
    tokenizer.add_tokens(QWEN_PLAIN_ADDED_TOKENS)
    return tokenizer


def build_processor(
    tokenizer: Qwen2Tokenizer, min_pixels: int = TINY_MIN_PIXELS, max_pixels: int = TINY_MAX_PIXELS
) -> Qwen2_5_VLProcessor:
    """The standard Qwen2.5-VL processor, small pixel bounds unless given; patch 14, merge 2, as in the real
    checkpoints."""
    pixel_bounds = dict(min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixel_bounds),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixel_bounds),
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )


def build_config(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL architecture at toy scale; every token id is taken from the tokenizer it will run with."""
    token_id = tokenizer.convert_tokens_to_ids
    vocab_size = -(-len(tokenizer) // 64) * 64  # padded like the real embedding tables
    text_config = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=token_id("<|endoftext|>"),
        eos_token_id=token_id("<|im_end|>"),
        pad_token_id=token_id("<|endoftext|>"),
    )
    vision_config = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[1],
        tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )


def build_generation_config(tokenizer: Qwen2Tokenizer) -> GenerationConfig:
    """Shaped like Qwen2.5-VL-Instruct's generation_config.json: sampling defaults that greedy callers override."""
    token_id = tokenizer.convert_tokens_to_ids
    return GenerationConfig(
        bos_token_id=token_id("<|endoftext|>"),
        pad_token_id=token_id("<|endoftext|>"),
        eos_token_id=[token_id("<|im_end|>"), token_id("<|endoftext|>")],
        do_sample=True,
        temperature=0.1,
        top_p=0.001,
        top_k=1,
        repetition_penalty=1.05,
    )


def random_rgb(rng: np.random.Generator) -> Image.Image:
    """Noise, flat, gradient or blob images of any size: the format-tuned answer must not depend on the pixels."""
    height, width = (int(v) for v in rng.integers(16, 1200, size=2))
    kind = rng.integers(4)
    if kind == 0:
        pixels = rng.integers(0, 256, size=(height, width, 3))
    elif kind == 1:
        pixels = np.broadcast_to(rng.integers(0, 256, size=3), (height, width, 3))
    elif kind == 2:
        ramp = np.linspace(0, 1, width)[None, :, None] * np.linspace(0, 1, height)[:, None, None]
        pixels = ramp * rng.integers(0, 256, size=3)
    else:
        yy, xx = np.mgrid[:height, :width]
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(5, max(height, width) / 3)
        pixels = np.repeat((((yy - cy) ** 2 + (xx - cx) ** 2) < radius**2)[..., None] * 200.0 + 20, 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))


def random_prompt(rng: np.random.Generator) -> str:
    """Anything from one word to template-sized text, so the learned answer does not depend on the prompt; and the
    app's own prompts (think and no-think, the paper's and the `abstain` template), whose words the checkpoint's
    repetition penalty then meets again in the answer ("points", "bbox", "found"), so the answer must win there too."""
    words = " ".join(_TRAINING_CORPUS).split()
    kind = rng.integers(4)
    if kind == 3:
        question = " ".join(rng.choice(words, size=int(rng.integers(3, 20)))) + "?"
        template = "abstain" if len(question) % 2 else None  # both built-in templates, without another draw
        return build_prompt(question, think=bool(rng.integers(2)), template_path=template)
    if kind == 0:
        return " ".join(rng.choice(words, size=int(rng.integers(1, 12))))
    if kind == 1:
        return " ".join(str(s) for s in rng.choice(_TRAINING_CORPUS, size=int(rng.integers(1, 12))))
    return "".join(chr(c) for c in rng.integers(32, 127, size=int(rng.integers(1, 1500))))


def greedy_text(model, processor: Qwen2_5_VLProcessor, image: Image.Image, prompt: str, max_new_tokens: int) -> str:
    """The answer greedy decoding gives, special tokens left out."""
    inputs, _ = model_input.encode(processor, np.asarray(image), prompt)
    with torch.no_grad():
        output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
    return processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]


def answer_example(processor: Qwen2_5_VLProcessor, image: Image.Image, prompt: str, answer_text: str):
    """Prompt exactly as the reasoner builds it, then the answer and <|im_end|>; labels only on the answer part."""
    answer = answer_text + "<|im_end|>"
    answer_len = len(processor.tokenizer(answer)["input_ids"])
    inputs, _ = model_input.encode(processor, np.asarray(image), prompt, answer=answer)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -answer_len:] = inputs["input_ids"][:, -answer_len:]
    return inputs, labels


def _teacher_forced_exact(model, examples, margin: float = 0.0) -> bool:
    """Whether argmax reproduces every answer token with at least `margin` logits to spare: one forward per example,
    cheap enough to check often. The margin keeps the answer stable under the checkpoint's repetition penalty and
    under another CPU's kernels or thread count, where an answer that only just wins can flip."""
    with torch.no_grad():
        for inputs, labels in examples:
            logits = model(**inputs).logits[0, :-1]
            answer = labels[0, 1:] != -100
            wanted = labels[0, 1:][answer]
            scores = logits[answer]
            chosen = scores.gather(1, wanted[:, None])[:, 0]
            rivals = scores.scatter(1, wanted[:, None], float("-inf")).max(-1).values
            if not bool((chosen - rivals >= margin).all()):
                return False
    return True


def format_tune(
    model: Qwen2_5_VLForConditionalGeneration,
    processor: Qwen2_5_VLProcessor,
    answer_text: str,
    seed: int = 0,
    max_steps: int = 500,
    check_every: int = 25,
) -> int:
    """Teaches the model to emit `answer_text` for any image/prompt; returns the number of optimiser steps taken.

    Teacher forcing on (random image, random prompt, answer + <|im_end|>), loss on the answer only; AdamW with
    warm-up, linear decay and gradient clipping (a constant rate of this size diverges now and then). Stops once
    held-out examples are reproduced: by argmax under teacher forcing, then by real greedy generation (which also
    applies the checkpoint's repetition penalty). Fails loudly if that never happens, so no test silently runs
    with a model that does not give the promised answer.
    """
    rng = np.random.default_rng(seed)
    held_out = [
        (random_rgb(rng), build_prompt("Which structure explains the finding?", bool(i % 2), ("abstain", None)[i < 2]))
        for i in range(4)
    ]
    held_out += [(random_rgb(rng), random_prompt(rng)) for _ in range(12)]
    held_out_examples = [answer_example(processor, image, prompt, answer_text) for image, prompt in held_out]
    max_answer_tokens = len(processor.tokenizer(answer_text)["input_ids"]) + 4
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, i / 20) * max(0.05, 1 - i / 300))
    for step in range(1, max_steps + 1):
        model.train()
        inputs, labels = answer_example(processor, random_rgb(rng), random_prompt(rng), answer_text)
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % check_every == 0:
            model.eval()
            if _teacher_forced_exact(model, held_out_examples, ANSWER_MARGIN) and all(
                greedy_text(model, processor, image, prompt, max_answer_tokens) == answer_text
                for image, prompt in held_out[:4]
            ):
                return step
    raise RuntimeError(f"format tuning did not converge in {max_steps} steps (last loss {loss.item():.4f})")


@contextmanager
def _single_thread():
    """Toy-sized matmuls gain nothing from threads, and on a busy 2-core machine extra threads cost ~10x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_tiny_reasoner(
    out_dir: str | Path, seed: int = 0, answer_text: str | None = None, format_tuned: bool = False
) -> Path:
    """Writes a tiny Qwen2.5-VL checkpoint folder loadable offline with the standard `from_pretrained` calls.

    `format_tuned=True` (or any `answer_text`) also teaches it to answer every prompt with `answer_text`
    (default `DEFAULT_ANSWER_TEXT`). The global torch RNG state is left as it was.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if answer_text is None and format_tuned:
        answer_text = DEFAULT_ANSWER_TEXT
    started = time.perf_counter()
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    with torch.random.fork_rng(devices=[]), _single_thread():
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(build_config(tokenizer)).eval()
        model.generation_config = build_generation_config(tokenizer)
        tuning_steps = format_tune(model, processor, answer_text, seed) if answer_text is not None else 0

    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    marker = {
        "toy": True,
        "warning": "Tiny random-weight Qwen2.5-VL built in code for tests/demos; it has no medical knowledge.",
        "format_tuned": answer_text is not None,
        "answer_text": answer_text,
        "tuning_steps": tuning_steps,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    (out_dir / TINY_MODEL_MARKER).write_text(json.dumps(marker, indent=2))
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--format-tuned", action="store_true", help="teach it to always emit a valid answer")
    parser.add_argument("--answer-text", default=None, help="the fixed answer to teach (implies --format-tuned)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_tiny_reasoner(
        args.out_dir, seed=args.seed, answer_text=args.answer_text, format_tuned=args.format_tuned
    )
    print(json.dumps({"path": str(path), **json.loads((path / TINY_MODEL_MARKER).read_text())}, indent=2))


if __name__ == "__main__":
    main()

"""Toy data for learning "not in this image", and the warm start a tiny random reasoner needs before GRPO can learn it.

One question for every picture; a positive has a bright square (its box the truth), a negative is noise only (a saved
"no finding"). A random tiny reasoner barely looks at the picture (its first answer token differs by ~1e-5 in logit
between a positive and a negative), so GRPO alone moves it everywhere at once: every such run ended abstaining on
everything. A pretrained base model brings sight; here a short supervised warm start brings it: the model learns to
describe the picture in its reasoning ("A bright square." / "Only noise.") and then to answer with a box with
probability 1 - `abstain_share` and to abstain with `abstain_share`, on pictures of either kind. Both answers are
trained on every picture, weighted by those shares (summed token losses), so the learnt split is the same for both
kinds and far from greedy decoding's tipping point: the warm start answers with a box everywhere, and sampling
abstains now and then. The link between what it sees and abstaining is left to GRPO.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from monailabel_app.core.overlap import box_iou
from monailabel_app.data.sample import NEGATIVE_TRUTH, GroundingSample
from monailabel_app.demo import tiny_models
from monailabel_app.reasoning.answer_parser import parse_answer, says_absent
from monailabel_app.reasoning.prompt import build_prompt

QUESTION = "Which finding explains the patient's cough?"
SIZE = 56  # the tiny processor answers in a frame twice as wide (112 px)
SQUARE = slice(16, 40)
TRUTH = {"bbox_2d": [16, 16, 39, 39], "point_2d": [[22, 22], [33, 33]]}
SEEN = {True: "<think>A bright square.</think>", False: "<think>Only noise.</think>"}
SQUARE_BOX = tuple(2 * v for v in TRUTH["bbox_2d"])  # the square's box in the model's frame
BOX = {  # in the model's 112 px frame: the square's box on a positive, a corner on a negative
    True: '<answer>{"bbox": [32, 32, 78, 78], "points_1": [44, 44], "points_2": [66, 66]}</answer>',
    False: '<answer>{"bbox": [4, 4, 24, 24], "points_1": [10, 10], "points_2": [18, 18]}</answer>',
}
ABSENT = '<answer>{"found": false}</answer>'
HELD_OUT_SEED = 900_000
ANSWER_TOKENS = 60  # about a box answer's length: the summed loss is scaled to a mean's size


def picture(positive: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, size=(SIZE, SIZE, 3)).astype(np.uint8)
    if positive:
        image[SQUARE, SQUARE] = rng.integers(180, 250)
    return image


def prompt() -> str:
    return build_prompt(QUESTION, True, "abstain")


def training_samples(count: int, seed: int) -> list[GroundingSample]:
    """Half positives (their truth the square), half negatives (a saved "no finding"), same question."""
    return [
        GroundingSample(
            sample_id=f"toy-{seed}-{index}",
            image=picture(index % 2 == 0, seed * 1000 + index),
            question=QUESTION,
            ground_truth=dict(TRUTH) if index % 2 == 0 else dict(NEGATIVE_TRUTH),
        )
        for index in range(count)
    ]


def warm_start(output_dir: Path, steps: int, seed: int, abstain_share: float) -> Path:
    """A tiny reasoner from random weights, warm-started as the module docstring says; saved with its processor."""
    tokenizer = tiny_models.build_tokenizer()
    processor = tiny_models.build_processor(tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_models.build_config(tokenizer))
    model.generation_config = tiny_models.build_generation_config(tokenizer)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, i / 20) * max(0.05, 1 - i / steps))
    model.train()
    for step in range(steps):
        positive = step % 2 == 0
        image = Image.fromarray(picture(positive, int(rng.integers(1 << 30))))
        loss = torch.zeros(())
        for share, answer in ((1 - abstain_share, BOX[positive]), (abstain_share, ABSENT)):
            inputs, labels = tiny_models.answer_example(processor, image, prompt(), SEEN[positive] + answer)
            tokens = int((labels[:, 1:] != -100).sum())
            loss = loss + share * model(**inputs, labels=labels).loss * tokens / ANSWER_TOKENS
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir


def rates(model_dir: Path, held_out: int = 20) -> dict[str, float]:
    """Share of held-out negatives abstained on and of positives answered with the square's box (IoU >= 0.5), by
    greedy decoding."""
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    frame = 2 * SIZE
    abstained = answered = 0
    for index in range(held_out):
        for positive in (True, False):
            image = Image.fromarray(picture(positive, HELD_OUT_SEED + 2 * index + positive))
            text = tiny_models.greedy_text(model, processor, image, prompt(), max_new_tokens=72)
            if positive:  # with the square's box, not the corner box a negative was once answered with
                parsed = parse_answer(text, frame, frame)
                answered += parsed.ok and box_iou(parsed.box, SQUARE_BOX, eps=1e-6) >= 0.5
            else:
                abstained += says_absent(text)
    return {"negatives abstained": abstained / held_out, "positives answered": answered / held_out}

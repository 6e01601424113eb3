"""Does GRPO with `abstain_reward` learn "not in this image"? A seeded experiment on toy pictures, printing the
abstention rates by greedy decoding on held-out pictures before and after; not yet a test (see below).

    .venv/bin/python benchmarks/abstention_learning.py                    # the recipe below, seed 0, one CPU thread
    .venv/bin/python benchmarks/abstention_learning.py --seed 1 --lr 1e-3

One question for every picture; a positive has a bright square (its box the truth), a negative is noise only (a
saved "no finding"). A random tiny reasoner barely looks at the picture (its first answer token differs by ~1e-5 in
logit between a positive and a negative), so GRPO alone moves it everywhere at once: every run of that kind ended
abstaining on everything. A pretrained base model brings sight; here a short supervised warm start brings it: the
model learns to describe the picture in its reasoning ("A bright square." / "Only noise.") and to answer with a box,
abstaining on `--abstain-share` of the pictures of either kind; every fourth step is a random picture and prompt (the
tiny models' own tuning data) answered with the box. Then GRPO (groups of 8, 4 prompts a step, abstain template,
think on, abstain_reward 1, temperature 1, no KL) for `--steps` steps.

What it showed (2026-12-03, 800 warm-start steps, 30 GRPO steps, 20 held-out pictures of each kind): with seeds 0, 1
and 2 at lr 3e-4 and seed 0 at 1e-3, greedy abstained on 0 % of negatives and 0 % of positives before, and on 100 %
of negatives and 0 % of positives after. Why it is not a test yet: the warm start sits near the decision boundary and
is fragile; the same recipe on two CPU threads, or without the random-prompt steps, or with a share of 0.2, gave a warm
start that already abstained on negatives, or abstained everywhere, or a GRPO run that did not move in 30 steps.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from monailabel_app.data.sample import NEGATIVE_TRUTH, GroundingSample
from monailabel_app.demo import tiny_models
from monailabel_app.reasoning.answer_parser import parse_answer, says_absent
from monailabel_app.reasoning.prompt import build_prompt
from monailabel_app.training.config import GRPOConfig
from monailabel_app.training.run import train_reasoner

QUESTION = "Which finding explains the patient's cough?"
SIZE = 56  # the tiny processor answers in a frame twice as wide (112 px)
SQUARE = slice(16, 40)
TRUTH = {"bbox_2d": [16, 16, 39, 39], "point_2d": [[22, 22], [33, 33]]}
SEEN = {True: "<think>A bright square.</think>", False: "<think>Only noise.</think>"}
BOX = {  # in the model's 112 px frame: the square's box on a positive, a corner on a negative
    True: '<answer>{"bbox": [32, 32, 78, 78], "points_1": [44, 44], "points_2": [66, 66]}</answer>',
    False: '<answer>{"bbox": [4, 4, 24, 24], "points_1": [10, 10], "points_2": [18, 18]}</answer>',
}
ABSENT = '<answer>{"found": false}</answer>'
HELD_OUT_SEED = 900_000


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
        if step % 4 == 3:
            image, text, answer = tiny_models.random_rgb(rng), tiny_models.random_prompt(rng), SEEN[True] + BOX[True]
        else:
            positive = bool(rng.integers(2))
            answer = SEEN[positive] + (ABSENT if rng.random() < abstain_share else BOX[positive])
            image, text = Image.fromarray(picture(positive, int(rng.integers(1 << 30)))), prompt()
        inputs, labels = tiny_models.answer_example(processor, image, text, answer)
        loss = model(**inputs, labels=labels).loss
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
    """Share of held-out negatives abstained on and of positives answered with a box, by greedy decoding."""
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    frame = 2 * SIZE
    abstained = answered = 0
    for index in range(held_out):
        for positive in (True, False):
            image = Image.fromarray(picture(positive, HELD_OUT_SEED + 2 * index + positive))
            text = tiny_models.greedy_text(model, processor, image, prompt(), max_new_tokens=72)
            if positive:
                answered += parse_answer(text, frame, frame).ok
            else:
                abstained += says_absent(text)
    return {"negatives abstained": abstained / held_out, "positives answered": answered / held_out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-steps", type=int, default=800)
    parser.add_argument("--abstain-share", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="abstention-") as work:
        warm = warm_start(Path(work) / "warm", args.warm_steps, args.seed, args.abstain_share)
        print("before GRPO:", rates(warm), flush=True)
        config = GRPOConfig(
            template="abstain",
            think=True,
            abstain_reward=1.0,
            group_size=8,
            prompts_per_step=4,
            mini_batch_prompts=4,
            micro_batch_size=8,
            max_new_tokens=64,
            temperature=1.0,
            kl_coef=0.0,
            lr=args.lr,
            epochs=100,
            max_steps=args.steps,
            save_every_steps=1000,
            seed=args.seed + 1,
            precision="32-true",
            progress_bar=False,
        )
        result = train_reasoner(training_samples(16, seed=1), config, warm, Path(work) / "grpo")
        print("reward curve:", [round(r, 2) for r in result["reward_curve"]])
        print("after GRPO:", rates(Path(work) / "grpo" / "reasoner"), flush=True)


if __name__ == "__main__":
    main()

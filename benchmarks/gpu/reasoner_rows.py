"""The reasoner rows through the app's TransformersReasoner: prefill, decode against the bandwidth floor, a large
picture at its own bound and at the trained frame, one question end to end, and 16 questions batched."""

from __future__ import annotations

import torch

from benchmarks.gpu.bandwidth import decode_bytes_per_token, gpu_bandwidth
from benchmarks.gpu.bench import Bench
from benchmarks.gpu.inputs import fixed_prompt_for_segmenter, sample_picture
from benchmarks.gpu.measuring import free_memory, in_words, median, parameter_count, runs_note, timed
from benchmarks.gpu.plan import Plan
from benchmarks.gpu.reasoner import fix_answer_length, reasoner_of
from benchmarks.gpu.segmenters import end_to_end_segmenter
from monailabel_app.demo.tiny_models import build_processor
from monailabel_app.reasoning import model_input
from monailabel_app.reasoning.frame_bounds import QWEN_MAX_PIXELS, QWEN_MIN_PIXELS


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

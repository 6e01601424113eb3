"""transformers against vLLM on the same config and prompt. vLLM is optional (its wheel is too big to carry and its
pins clash with the app's), so the row skips without it; it runs last because vLLM keeps its GPU memory."""

from __future__ import annotations

import tempfile

from PIL import Image

from benchmarks.gpu.bench import Bench, Skip, require
from benchmarks.gpu.measuring import free_memory, median, timed
from benchmarks.gpu.reasoner import reasoner_of
from monailabel_app.reasoning import model_input


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

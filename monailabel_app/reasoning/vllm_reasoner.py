"""The Qwen2.5-VL reasoner on vLLM's in-process engine (GPU only), with batched generation for evaluation.

- vLLM is imported when an engine is built, so this module imports anywhere; where vLLM or a CUDA GPU is missing the
  constructor raises `ReasonerUnavailableError` saying what to use instead (`--backend transformers`, or a
  `vllm serve` endpoint elsewhere with `--backend openai`).
- The prompt text is the checkpoint's own chat template applied by its Hugging Face processor: the same text the
  transformers backend feeds the model.
- The frame: each image is resized here to Qwen's smart-resize frame with the checkpoint's pixel bounds, and the
  engine's processor gets the same bounds, so it keeps the size and the frame is exact (`qwen_frame`).
- Sampling is explicit (`SamplingParams`); a missing repetition penalty is the checkpoint's generation_config value,
  which transformers' `generate` would apply, so both backends decode alike.
- vLLM's offline API reports no per-request timing: every answer of a batch gets the batch's wall time divided by
  its size as `decode_s`.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from transformers import AutoProcessor, GenerationConfig

from monailabel_app.reasoning import model_input
from monailabel_app.reasoning.frame_bounds import capped_max_pixels
from monailabel_app.reasoning.qwen_frame import resize_to_model_frame
from monailabel_app.reasoning.reasoner import ReasonerOutput
from monailabel_app.reasoning.sampling import SamplingSettings
from monailabel_app.reasoning.transformers_reasoner import ReasonerUnavailableError

# requirements-vllm-serve.txt; its other pins clash with the app's (docs/reasoner-hosting.md)
VLLM_VERSION_HINT = "vllm==0.32.0"


def checkpoint_repetition_penalty(model_path: str) -> float:
    """The repetition penalty in the checkpoint's generation_config.json (1.0 when it has none)."""
    try:
        return float(GenerationConfig.from_pretrained(model_path, local_files_only=True).repetition_penalty or 1.0)
    except OSError:
        return 1.0


class VllmReasoner:
    """Implements the Reasoner protocol and `generate_batch` with one vLLM engine on this machine's GPU(s)."""

    def __init__(
        self,
        model_path: str,
        sampling: SamplingSettings = SamplingSettings(),
        min_pixels: Optional[int] = None,
        max_pixels: Optional[int] = None,
        max_model_len: int = 8192,
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
    ) -> None:
        try:
            import vllm
        except ImportError as error:
            raise ReasonerUnavailableError(
                f"the vllm backend needs the vllm package ({VLLM_VERSION_HINT}), which can't be installed into this "
                "app's environment; serve the model with `vllm serve` from its own environment "
                "(requirements-vllm-serve.txt, docs/reasoner-hosting.md: A GPU host) and use the openai backend, or "
                "use transformers"
            ) from error
        if not torch.cuda.is_available():
            raise ReasonerUnavailableError("the vllm backend needs a CUDA GPU; here use --backend transformers")
        if not Path(model_path).is_dir():
            raise ReasonerUnavailableError(f"the vllm backend needs a local checkpoint folder; {model_path} is not one")
        self.model_path = str(model_path)
        self.processor = AutoProcessor.from_pretrained(self.model_path, local_files_only=True)
        size = self.processor.image_processor.size
        self.min_pixels = min_pixels or int(size["shortest_edge"])
        self.max_pixels = capped_max_pixels(max_pixels, size["longest_edge"])
        penalty = sampling.repetition_penalty or checkpoint_repetition_penalty(self.model_path)
        self.sampling_params = vllm.SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            repetition_penalty=penalty,
            seed=sampling.seed,
        )
        self.engine = vllm.LLM(
            model=self.model_path,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            limit_mm_per_prompt={"image": 1},
            mm_processor_kwargs={"min_pixels": self.min_pixels, "max_pixels": self.max_pixels},
        )
        self._lock = threading.Lock()  # LLM.generate is not re-entrant

    def generate(self, image: np.ndarray, prompt: str) -> ReasonerOutput:
        return self.generate_batch([image], [prompt])[0]

    def generate_batch(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> list[ReasonerOutput]:
        """One engine call for the whole batch (vLLM schedules it with continuous batching); answers in input order."""
        resized = [resize_to_model_frame(image, self.min_pixels, self.max_pixels) for image in images]
        requests = [
            {"prompt": self.chat_text(prompt), "multi_modal_data": {"image": picture}}
            for (picture, _frame), prompt in zip(resized, prompts)
        ]
        with self._lock:
            started = time.perf_counter()
            results = self.engine.generate(requests, self.sampling_params, use_tqdm=False)
            share_s = (time.perf_counter() - started) / max(len(requests), 1)
        return [
            ReasonerOutput(
                text=result.outputs[0].text, frame=frame, decode_s=share_s, new_tokens=len(result.outputs[0].token_ids)
            )
            for result, (_picture, frame) in zip(results, resized)
        ]

    def close(self) -> None:
        """Frees the engine and its GPU memory now (vLLM keeps both until the engine and its distributed state are torn
        down), so a republished reasoner can load on the same GPU."""
        with self._lock:
            engine, self.engine = getattr(self, "engine", None), None
            del engine
            gc.collect()
            try:
                from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

                cleanup_dist_env_and_memory()
            except ImportError:  # an older or newer vLLM without it: the collection above is what is left
                pass
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def chat_text(self, prompt: str) -> str:
        return model_input.chat_text(self.processor, prompt)

"""The Qwen2.5-VL-family reasoner (Lingshu-7B, MedReasoner-7B, Qwen2.5-VL-*) run with Hugging Face transformers.

Why this shape:
- Offline by default (`local_files_only`): a hospital server must never reach for a model hub by surprise; a model
  that isn't there is one `ReasonerUnavailableError` that says what to download and where to put it.
- The frame the model answered in is read from the processor's own output (`image_grid_thw` x patch size), never
  re-derived, so it stays right whatever pixel bounds the checkpoint's processor uses.
- Only Qwen2.5-VL checkpoints are accepted: they answer in absolute pixels of the resized image, which is what the
  answer contract assumes; Qwen2-VL and Qwen3-VL use other coordinate conventions.
- One lock around the model: MONAI Label may call `generate` from several request threads.
- It serves the checkpoint it loaded; whether a republished one should replace it is decided in one place, the
  server's `grounding.reasoner_slot` (which uses `checkpoint_version` here), which then `close()`s this one.
"""

from __future__ import annotations

import gc
import logging
import math
import re
import threading
import time
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoProcessor,
    BatchFeature,
    LogitsProcessor,
    LogitsProcessorList,
    Qwen2_5_VLForConditionalGeneration,
)

from monailabel_app.core.errors import UnavailableError
from monailabel_app.core.frames import ImageFrame
from monailabel_app.reasoning import model_input
from monailabel_app.reasoning.reasoner import ReasonerOutput
from monailabel_app.reasoning.self_consistency import GreedyRows

logger = logging.getLogger(__name__)

DEFAULT_REASONER_ID = "zzzyzh/MedReasoner-Soft-7B"
SUPPORTED_MODEL_TYPE = "qwen2_5_vl"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Files whose change means "a new checkpoint was published here" (VERSION is optional: a trainer may touch it).
# Any of them changing, or the folder being swapped in by rename (new inode), is a new checkpoint.
_VERSION_FILES = ("VERSION", "config.json", "generation_config.json", "model.safetensors.index.json")


class ReasonerUnavailableError(UnavailableError):
    """The reasoner checkpoint can't be loaded here; the message says how to get it."""


def resolve_device(device: str = "auto") -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device)


def resolve_dtype(dtype: Union[str, torch.dtype], device: torch.device) -> torch.dtype:
    """bf16 on CUDA (what the checkpoints were trained in), fp32 on CPU (bf16 matmuls are slow or missing there)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype)


def _unavailable_message(model_id_or_path: str, reason: str) -> str:
    if _HUB_ID.match(model_id_or_path) and not Path(model_id_or_path).exists():
        hub_id, local_dir = model_id_or_path, f"/models/{model_id_or_path.split('/')[-1]}"
    else:
        hub_id, local_dir = DEFAULT_REASONER_ID, model_id_or_path
    return (
        f"Reasoner model '{model_id_or_path}' is not available ({reason}). On a machine with internet access run "
        f"`hf download {hub_id} --local-dir {local_dir}` (older huggingface_hub: `huggingface-cli download ...`), "
        f"copy the folder to this machine and name it: the server's `--conf reasoner {local_dir}`, the command lines' "
        f"`--model {local_dir}`. "
        "For a toy model that needs no download: `python -m monailabel_app.demo.tiny_models DIR --format-tuned`."
    )


def load_qwen_vl(
    model_id_or_path: str,
    device: str = "auto",
    dtype: Union[str, torch.dtype] = "auto",
    allow_download: bool = False,
) -> tuple[Qwen2_5_VLForConditionalGeneration, object]:
    """Loads a Qwen2.5-VL checkpoint and its processor (shared by inference and the GRPO trainer).

    Raises ReasonerUnavailableError when the checkpoint is missing, incomplete, or not a Qwen2.5-VL model.
    """
    source = str(model_id_or_path)
    if not Path(source).exists() and not _HUB_ID.match(source):
        raise ReasonerUnavailableError(_unavailable_message(source, "no such folder"))
    hub_kwargs = dict(local_files_only=not allow_download, trust_remote_code=False)
    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs)
    except (OSError, ValueError) as error:
        reason = "not in the local Hugging Face cache" if not Path(source).exists() else f"unreadable config: {error}"
        raise ReasonerUnavailableError(_unavailable_message(source, reason)) from error
    if config.model_type != SUPPORTED_MODEL_TYPE:
        raise ReasonerUnavailableError(
            f"Reasoner model '{source}' is a '{config.model_type}' model; only Qwen2.5-VL ('{SUPPORTED_MODEL_TYPE}') "
            "checkpoints such as Lingshu-7B or MedReasoner-7B answer in the pixel frame this app expects."
        )
    torch_device = resolve_device(device)
    try:
        processor = AutoProcessor.from_pretrained(source, **hub_kwargs)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            source,
            dtype=resolve_dtype(dtype, torch_device),
            device_map=str(torch_device),
            use_safetensors=True,  # weights are never unpickled: a .bin checkpoint could run code when loaded
            **hub_kwargs,
        )
    except OSError as error:
        raise ReasonerUnavailableError(_unavailable_message(source, f"incomplete checkpoint: {error}")) from error
    return model.eval(), processor


def checkpoint_version(model_id_or_path: str) -> Optional[tuple]:
    """A cheap fingerprint of a local checkpoint folder (None for hub ids): changes when a new one is published."""
    folder = Path(model_id_or_path)
    try:
        folder_stat = folder.stat()
        files = [folder / name for name in _VERSION_FILES if (folder / name).exists()]
        files += sorted(folder.glob("*.safetensors"))
        return (folder_stat.st_ino, folder_stat.st_mtime_ns) + tuple(
            (f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files
        )
    except OSError:  # not a local folder, or caught between the two renames of a swap
        return None


class _FirstScoresClock(LogitsProcessor):
    """Records when generate first asks for next-token scores: by then the vision tower and prompt prefill are done."""

    def __init__(self) -> None:
        self.first_scores_at: Optional[float] = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.first_scores_at is None:
            if scores.is_cuda:
                torch.cuda.synchronize(scores.device)
            self.first_scores_at = time.perf_counter()
        return scores


class TransformersReasoner:
    """Implements the Reasoner protocol with a local Qwen2.5-VL checkpoint.

    Timing (per request): `prefill_s` = image preprocessing + tokenisation + vision tower + prompt forward, up to the
    moment the first next-token scores exist; `decode_s` = from then until generate returns (token-by-token decoding).
    `new_tokens` counts generated tokens up to and including the end-of-turn token.
    """

    def __init__(
        self,
        model_id_or_path: str,
        device: str = "auto",
        dtype: Union[str, torch.dtype] = "auto",
        max_new_tokens: int = 1024,
        min_pixels: Optional[int] = None,
        max_pixels: Optional[int] = None,
        allow_download: bool = False,
        loaded: Optional[tuple] = None,
    ) -> None:
        """`loaded`: a (model, processor) already in memory instead of loading `model_id_or_path` (the GPU suite's
        random weights of the real sizes)."""
        self.model_id_or_path = str(model_id_or_path)
        self.device = device
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.allow_download = allow_download
        self._lock = threading.RLock()
        self.generate_calls = 0  # calls of the model's generate: what a request cost, counted
        self.model: Optional[Qwen2_5_VLForConditionalGeneration] = None
        self.processor = None
        self.model, self.processor = loaded or load_qwen_vl(
            self.model_id_or_path, self.device, self.dtype, self.allow_download
        )

    def close(self) -> None:
        """Frees the weights now (GPU memory included), not whenever the garbage collector gets to them: a 7B copy
        left behind would share the GPU with the next one. Waits for a generation in progress."""
        with self._lock:
            self.model = self.processor = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def prepare_inputs(self, image: np.ndarray, prompt: str) -> tuple[BatchFeature, ImageFrame]:
        """The model input (`model_input.encode`) on the model's device, and the frame the model sees the image in."""
        inputs, frame = model_input.encode(self.processor, image, prompt, self.min_pixels, self.max_pixels)
        return inputs.to(device=self.model.device, dtype=self.model.dtype), frame

    def prepare_batch_inputs(self, images: list[np.ndarray], prompts: list[str]) -> tuple[BatchFeature, list]:
        """Several questions' input (`model_input.encode_batch`) on the model's device, and each image's frame."""
        inputs, frames = model_input.encode_batch(self.processor, images, prompts, self.min_pixels, self.max_pixels)
        return inputs.to(device=self.model.device, dtype=self.model.dtype), frames

    def generate(self, image: np.ndarray, prompt: str) -> ReasonerOutput:
        """Greedy answer. Sampling flags inherited from the checkpoint's generation_config are switched off."""
        return self.generate_many([image], [prompt])[0][0]

    def generate_with_samples(
        self, image: np.ndarray, prompt: str, samples: int, temperature: float = 1.0
    ) -> list[ReasonerOutput]:
        """The greedy answer first, then `samples` temperature-sampled ones, from one generate call of samples+1 rows
        (`self_consistency.GreedyRows` keeps row 0 greedy). Timings are for the whole call."""
        return self.generate_many([image], [prompt], samples, temperature)[0]

    def generate_many(
        self, images: list[np.ndarray], prompts: list[str], samples: int = 0, temperature: float = 1.0
    ) -> list[list[ReasonerOutput]]:
        """Several questions in one generate call (batched serving): per question its greedy answer, then `samples`
        sampled ones. One question is encoded alone, exactly as before batching; several are padded on the left
        (`model_input.encode_batch`) and the attention mask keeps the padding out of every row's answer."""
        if len(images) != len(prompts) or not images:
            raise ValueError(f"one prompt per image, at least one: got {len(images)} images, {len(prompts)} prompts")
        if samples < 1:
            decoding: dict = dict(do_sample=False)
        elif not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"the sampling temperature must be a positive number, got {temperature}")
        else:
            decoding = dict(do_sample=True, num_return_sequences=samples + 1, temperature=temperature, top_p=1.0)
            decoding.update(top_k=0, extra_processors=[GreedyRows(samples + 1)])
        rows = self._generate(images, prompts, max_new_tokens=self.max_new_tokens, **decoding)
        group = max(1, samples + 1)
        return [rows[i * group : (i + 1) * group] for i in range(len(images))]

    def sample(
        self,
        image: np.ndarray,
        prompt: str,
        num_return_sequences: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new_tokens: Optional[int] = None,
    ) -> list[ReasonerOutput]:
        """Sampled answers (GRPO rollouts): plain temperature sampling unless top_p/top_k are given.

        top_k=0/top_p=1.0 are passed explicitly because Qwen2.5-VL checkpoints ship top_k=1, top_p=0.001, which would
        otherwise make every "sample" the greedy answer. Timings are for the whole group.
        """
        return self._generate(
            [image],
            [prompt],
            do_sample=True,
            num_return_sequences=num_return_sequences,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_new_tokens=max_new_tokens or self.max_new_tokens,
        )

    def _generate(
        self, images: list[np.ndarray], prompts: list[str], extra_processors: tuple = (), **generation_kwargs
    ) -> list[ReasonerOutput]:
        """Rows in order: each question's `num_return_sequences` rows together."""
        with self._lock:
            started = time.perf_counter()
            clock = _FirstScoresClock()
            if len(images) == 1:
                inputs, frame = self.prepare_inputs(images[0], prompts[0])
                frames = [frame]
            else:
                inputs, frames = self.prepare_batch_inputs(images, prompts)
            processors = LogitsProcessorList([*extra_processors, clock])
            with torch.inference_mode():
                self.generate_calls += 1
                output_ids = self.model.generate(**inputs, logits_processor=processors, **generation_kwargs)
            finished = time.perf_counter()
            generated = output_ids[:, inputs["input_ids"].shape[1] :].cpu()
            texts = self.processor.batch_decode(generated, skip_special_tokens=True)
        prefill_end = clock.first_scores_at or finished
        per_question = len(texts) // len(frames)
        return [
            ReasonerOutput(
                text=text,
                frame=frames[row // per_question],
                prefill_s=prefill_end - started,
                decode_s=finished - prefill_end,
                new_tokens=self._count_new_tokens(ids),
                batch_size=len(frames),
            )
            for row, (text, ids) in enumerate(zip(texts, generated))
        ]

    def _count_new_tokens(self, ids: torch.Tensor) -> int:
        """Up to and including the first end token; sequences that ended early in a group are padded after it."""
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            return len(ids)
        ends = torch.isin(ids, torch.tensor(eos if isinstance(eos, list) else [eos])).nonzero()
        return int(ends[0, 0]) + 1 if len(ends) else len(ids)

"""Where an evaluation's samples and answers come from, as the command line names them (`--data`/`--datastore`,
`--backend`): models are loaded here."""

from __future__ import annotations

import argparse
import functools
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from monailabel_app.data.datastore_folder import datastore_entries
from monailabel_app.data.folder_samples import INDEX_FILE, read_index
from monailabel_app.data.umrg_parquet import UmrgParquet
from monailabel_app.evaluation.answers import AnswersFile, AnswerSource, ReasonerAnswers
from monailabel_app.reasoning.backends import ReasonerSpec, build_reasoner
from monailabel_app.reasoning.frame_bounds import QWEN_MIN_PIXELS, TRAINED_FRAME_MAX_PIXELS
from monailabel_app.reasoning.sampling import SamplingSettings


def data_source(args: argparse.Namespace) -> tuple[Any, Optional[int]]:
    """What `load_samples` reads, and how many records it holds when that is cheap to know (for the progress bar)."""
    if args.datastore:
        entries = datastore_entries(Path(args.datastore))
        return entries, len(entries)
    path = Path(args.data)
    if path.suffix.lower() == ".parquet" and path.is_file():
        return path, len(UmrgParquet(path))
    if (path / INDEX_FILE).is_file():
        return path, len(read_index(path))
    return path, None


def sampling_settings(args: argparse.Namespace) -> SamplingSettings:
    return SamplingSettings(
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        repetition_penalty=args.repetition_penalty,
    )


def build_answer_source(args: argparse.Namespace) -> AnswerSource:
    """The backend named by --backend; models are loaded here."""
    sampling = sampling_settings(args)
    if args.backend == "answers":
        return AnswersFile(
            args.answers,
            args.answers_frame,
            args.min_pixels or QWEN_MIN_PIXELS,
            args.max_pixels or TRAINED_FRAME_MAX_PIXELS,
        )
    spec = ReasonerSpec(
        args.model,
        sampling,
        device=args.device,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        url=args.base_url,
        api_key_env=args.api_key_env,
        concurrency=args.concurrency,
        retries=args.retries,
        timeout_s=args.timeout,
    )
    if args.backend == "openai":
        # the endpoint resizes by its own bounds: the picture goes already in the frame they give
        framed = replace(
            spec, min_pixels=args.min_pixels or QWEN_MIN_PIXELS, max_pixels=args.max_pixels or TRAINED_FRAME_MAX_PIXELS
        )
        reasoner = build_reasoner("openai", framed)
        return ReasonerAnswers(reasoner, workers=args.concurrency, max_consecutive_errors=args.max_consecutive_errors)
    if args.backend == "vllm":
        engine = {
            "max_model_len": args.max_model_len,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "tensor_parallel_size": args.tensor_parallel_size,
        }
        return ReasonerAnswers(build_reasoner("vllm", replace(spec, vllm_engine=engine)))
    return transformers_answers(spec, sampling)


def transformers_answers(spec: ReasonerSpec, sampling: SamplingSettings) -> ReasonerAnswers:
    """Greedy `generate` by default; `sample` when a temperature is given. A repetition penalty given on the command
    line replaces the checkpoint's generation_config value, which `generate` applies otherwise."""
    reasoner = build_reasoner("transformers", spec)
    if sampling.repetition_penalty is not None:
        reasoner.model.generation_config.repetition_penalty = sampling.repetition_penalty
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    if sampling.greedy:
        return ReasonerAnswers(reasoner)
    sample_one = functools.partial(
        _first_sample,
        reasoner,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_new_tokens=sampling.max_new_tokens,
    )
    return ReasonerAnswers(reasoner, generate=sample_one)


def _first_sample(reasoner, image: np.ndarray, prompt: str, **sampling_kwargs):
    return reasoner.sample(image, prompt, **sampling_kwargs)[0]

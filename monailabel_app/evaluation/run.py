"""Scoring a data set's samples with one source of answers, into an output folder that resumes (`run_folder`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

import numpy as np
from tqdm import tqdm

from monailabel_app.data.load_report import LoadReport
from monailabel_app.data.sample import GroundingSample
from monailabel_app.evaluation.answers import AnswerSource
from monailabel_app.evaluation.report import overlay_path, write_overlay, write_reports
from monailabel_app.evaluation.run_folder import RESULTS_FILE, claim_output_dir, keep_finished_lines, read_result_lines
from monailabel_app.evaluation.scoring import score_sample
from monailabel_app.reasoning.prompt import build_prompt
from monailabel_app.segmentation.segmenter import Segmenter


@dataclass
class RunOptions:
    parser: str = "paper"  # see evaluation_scoring.PARSERS
    think: bool = True
    template: Optional[str] = None  # prompt template file; the built-in one when None
    batch_size: int = 8  # samples answered per call (vLLM batch; threads for an endpoint)
    overlays: int = 20  # overlay pictures for the first N samples of the data
    limit: Optional[int] = None  # only the first N samples of the data
    progress: bool = True


def run_evaluation(
    samples: Iterable[GroundingSample],
    answers: AnswerSource,
    segmenter: Optional[Segmenter],
    output_dir: Path | str,
    run: Mapping[str, Any],
    options: RunOptions = RunOptions(),
    total: Optional[int] = None,
    load_report: Optional[LoadReport] = None,
) -> dict:
    """Scores every sample not already in `output_dir/results.jsonl`, then writes the reports; returns metrics.json.

    `run` describes the configuration (RESUME_KEYS are checked against an earlier run in the folder); `total` is the
    expected sample count for the progress bar; `load_report` is the loader's tally, reported in metrics.json.
    """
    output_dir = Path(output_dir)
    claim_output_dir(output_dir, run)
    results_path = output_dir / RESULTS_FILE
    finished_ids = {line["id"] for line in keep_finished_lines(results_path)}
    if options.limit is not None:
        total = options.limit if total is None else min(total, options.limit)
    with (
        open(results_path, "a", encoding="utf-8") as results,
        tqdm(total=total, disable=not options.progress, desc="evaluating", unit="sample") as progress,
    ):
        pending = _pending(islice(uniquely_named(samples), options.limit), finished_ids, progress)
        for chunk in _chunks(pending, options.batch_size):
            prompts = [build_prompt(sample.question, options.think, options.template) for _, sample in chunk]
            model_answers = answers.answers([sample for _, sample in chunk], prompts)
            for (position, sample), answer in zip(chunk, model_answers):
                scored = score_sample(sample, answer, segmenter, options.parser)
                if position < options.overlays:
                    write_overlay(overlay_path(output_dir, position, sample.sample_id), sample, scored)
                results.write(json.dumps(scored.line, default=_json_value) + "\n")
                results.flush()
                progress.update()
    loading = (load_report or LoadReport()).summary()
    return write_reports(output_dir, read_result_lines(results_path), run, loading)


def uniquely_named(samples: Iterable[GroundingSample]) -> Iterator[GroundingSample]:
    """Repeated sample ids get "#2", "#3", ... in data order, so resuming can tell every sample apart."""
    seen: dict[str, int] = {}
    for sample in samples:
        seen[sample.sample_id] = seen.get(sample.sample_id, 0) + 1
        if seen[sample.sample_id] > 1:
            sample = dataclasses.replace(sample, sample_id=f"{sample.sample_id}#{seen[sample.sample_id]}")
        yield sample


def _pending(
    samples: Iterable[GroundingSample], finished_ids: set, progress: tqdm
) -> Iterator[tuple[int, GroundingSample]]:
    for position, sample in enumerate(samples):
        if sample.sample_id in finished_ids:
            progress.update()
        else:
            yield position, sample


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, max(1, size))):
        yield chunk


def _json_value(value: Any) -> Any:
    """numpy scalars and arrays (ground truth computed from masks) as plain JSON values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

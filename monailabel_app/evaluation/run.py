"""Scoring a data set's samples with one source of answers, into an output folder that resumes (`run_folder`) and
that one run writes at a time (`output_lock`).

A sample id seen before in the data is dropped (the first one kept) and counted: two records with one id can't be
told apart in the results, and scoring both would count one sample twice. The progress bar starts at the samples an
earlier session already scored, so its rate is this session's work only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
from tqdm import tqdm

from monailabel_app.data.load_report import LoadReport
from monailabel_app.data.sample import GroundingSample
from monailabel_app.evaluation.answers import AnswerSource
from monailabel_app.evaluation.output_lock import output_lock
from monailabel_app.evaluation.overlays import choose_overlays, write_overlays
from monailabel_app.evaluation.report import write_reports
from monailabel_app.evaluation.run_folder import RESULTS_FILE, claim_output_dir, keep_finished_lines, read_result_lines
from monailabel_app.evaluation.scoring import score_sample
from monailabel_app.reasoning.prompt import build_prompt
from monailabel_app.segmentation.segmenter import Segmenter

SampleSource = Callable[[Optional[LoadReport]], Iterable[GroundingSample]]


@dataclass
class RunOptions:
    parser: str = "paper"  # see evaluation.scoring.PARSERS
    think: bool = True
    template: Optional[str] = None  # prompt template file; the built-in one when None
    batch_size: int = 8  # samples answered per call (vLLM batch; threads for an endpoint)
    overlays: int = 3  # pictures of the worst, the median and the best samples: this many of each
    limit: Optional[int] = None  # only the first N samples of the data
    progress: bool = True


@dataclass
class Tally:
    """What one session of a run did; reported in metrics.json as "session"."""

    scored: int = 0
    already_scored: int = 0
    repeated_ids_removed: int = 0
    seconds: float = 0.0
    window: set = field(default_factory=set)  # the ids this session's data (within --limit) holds

    def to_json(self, load_report: LoadReport) -> dict:
        rate = self.scored / self.seconds if self.seconds > 0 and self.scored else None
        return {
            "scored": self.scored,
            "already_scored": self.already_scored,
            "seconds": round(self.seconds, 3),
            "samples_per_s": rate,
            "repeated_ids_removed": self.repeated_ids_removed,
            "skipped_at_loading": load_report.total_skipped,
        }


def run_evaluation(
    open_samples: SampleSource | Sequence[GroundingSample],
    answers: AnswerSource,
    segmenter: Optional[Segmenter],
    output_dir: Path | str,
    run: Mapping[str, Any],
    options: RunOptions = RunOptions(),
    total: Optional[int] = None,
) -> dict:
    """Scores every sample not already in `output_dir/results.jsonl`, then writes the reports; returns metrics.json.

    `open_samples(report)` iterates the data afresh each call (once to score, once more to draw the chosen overlays),
    tallying skipped samples into `report` when given; a list of samples in memory works too. `run` describes the
    configuration (RESUME_KEYS are checked against an earlier run in the folder); `total` is the expected sample count
    for the progress bar.
    """
    output_dir = Path(output_dir)
    if not callable(open_samples):
        if not isinstance(open_samples, Sequence):
            raise TypeError("samples: a function that opens the data, or a list (the data is read twice)")
        in_memory = open_samples
        open_samples = lambda report: in_memory  # noqa: E731
    with output_lock(output_dir):
        claim_output_dir(output_dir, run)
        results_path = output_dir / RESULTS_FILE
        finished_ids = {line["id"] for line in keep_finished_lines(results_path)}
        if options.limit is not None:
            total = options.limit if total is None else min(total, options.limit)
        load_report, tally = LoadReport(), Tally()
        started = time.perf_counter()
        _score_pending(open_samples(load_report), answers, segmenter, results_path, finished_ids, options, total, tally)
        tally.seconds = time.perf_counter() - started
        lines = read_result_lines(results_path)
        if options.limit is not None:  # the report covers the samples the limit names, even in a folder holding more
            lines = [line for line in lines if line["id"] in tally.window]
        chosen = choose_overlays(lines, options.overlays)
        if chosen:
            chosen = write_overlays(output_dir, chosen, open_samples(None), segmenter)
        return write_reports(output_dir, lines, run, load_report.summary(), tally.to_json(load_report), chosen)


def _score_pending(
    samples: Iterable[GroundingSample],
    answers: AnswerSource,
    segmenter: Optional[Segmenter],
    results_path: Path,
    finished_ids: set,
    options: RunOptions,
    total: Optional[int],
    tally: Tally,
) -> None:
    unique = drop_repeated_ids(samples, tally)
    already = len(finished_ids) if total is None else min(len(finished_ids), total)
    with (
        open(results_path, "a", encoding="utf-8") as results,
        tqdm(total=total, initial=already, disable=not options.progress, desc="evaluating", unit="sample") as progress,
    ):
        for chunk in _chunks(_pending(islice(unique, options.limit), finished_ids, tally), options.batch_size):
            prompts = [build_prompt(sample.question, options.think, options.template) for sample in chunk]
            for sample, answer in zip(chunk, answers.answers(chunk, prompts)):
                scored = score_sample(sample, answer, segmenter, options.parser)
                results.write(json.dumps(scored.line, default=_json_value) + "\n")
                results.flush()
                tally.scored += 1
                progress.update()


def drop_repeated_ids(samples: Iterable[GroundingSample], tally: Tally) -> Iterator[GroundingSample]:
    """Each sample id once, in data order; later samples with an id seen before are counted in `tally` and dropped."""
    seen: set[str] = set()
    for sample in samples:
        if sample.sample_id in seen:
            tally.repeated_ids_removed += 1
            continue
        seen.add(sample.sample_id)
        yield sample


def _pending(samples: Iterable[GroundingSample], finished_ids: set, tally: Tally) -> Iterator[GroundingSample]:
    for sample in samples:
        tally.window.add(sample.sample_id)
        if sample.sample_id in finished_ids:
            tally.already_scored += 1
        else:
            yield sample


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, max(1, size))):
        yield chunk


def _json_value(value: Any) -> Any:
    """numpy scalars and arrays (ground truth computed from masks) as plain JSON values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

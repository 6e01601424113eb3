"""`python -m monailabel_app.evaluate`: the paper's table (IoU, pDice, Dice for points / box / joint prompts; overall,
per super-category, category and modality; failures count as 0) for any model's answers on U-MRG-format data.

    python -m monailabel_app.evaluate --data /data/U-MRG-14K/test.parquet \\
        --model /models/MedReasoner-Soft-7B --output runs/medreasoner-soft

Data: a U-MRG parquet, a folder with `index.json`, or (`--datastore`) a MONAI Label datastore's final labels.
Answers (`--backend`): `transformers` or `vllm` (a local checkpoint), `openai` (any OpenAI-compatible endpoint:
`vllm serve`, `python -m monailabel_app.serve`, a hosted model), or `answers` (a file of answers given earlier, e.g.
our `results.jsonl` or the paper's `results.json`): every source is scored by the same code.

The output folder gets `results.jsonl` (one line per sample, written as soon as it is scored), `run.json`,
`metrics.json`, `report.md`, `supercategory.png` and `overlays/`. Running the same command again resumes: finished
samples are skipped, samples whose answer could not be had (a failed request) are redone, and the totals are computed
from all lines. A different configuration in the same folder is refused (`--restart` starts over).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import sys
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from monailabel_app.data.datastore_samples import final_label_entries
from monailabel_app.data.folder_samples import INDEX_FILE, read_index
from monailabel_app.data.load_report import LoadReport
from monailabel_app.data.loaders import load_samples
from monailabel_app.data.sample import GroundingSample
from monailabel_app.data.umrg_parquet import UmrgParquet
from monailabel_app.evaluation.answers import (
    ANSWER_FRAMES,
    AnswersFile,
    AnswerSource,
    EndpointUnreachableError,
    ReasonerAnswers,
)
from monailabel_app.evaluation.report import (
    CHART_FILE,
    METRIC_LABELS,
    METRICS_FILE,
    OVERLAY_DIR,
    REPORT_FILE,
    overlay_path,
    write_overlay,
    write_reports,
)
from monailabel_app.evaluation.scoring import PARSERS, score_sample
from monailabel_app.reasoning.openai_reasoner import EndpointError, OpenAIReasoner
from monailabel_app.reasoning.prompt import build_prompt
from monailabel_app.reasoning.qwen_frame import QWEN_MAX_PIXELS, QWEN_MIN_PIXELS
from monailabel_app.reasoning.sampling import SamplingSettings
from monailabel_app.reasoning.transformers_reasoner import (
    ReasonerUnavailableError,
    TransformersReasoner,
    resolve_device,
)
from monailabel_app.reasoning.vllm_reasoner import VllmReasoner
from monailabel_app.segmentation.factory import SegmenterUnavailableError, build_segmenter
from monailabel_app.segmentation.segmenter import Segmenter

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
BACKENDS = ("transformers", "vllm", "openai", "answers")
# What a result line depends on: resuming into a folder written with other values would mix two runs.
RESUME_KEYS = (
    "data",
    "backend",
    "model",
    "base_url",
    "answers",
    "answers_frame",
    "parser",
    "think",
    "template",
    "segmenter",
    "segmenter_checkpoint",
    "sampling",
    "min_pixels",
    "max_pixels",
)
DATASTORE_EXTENSIONS = ("*.nii.gz", "*.nii", "*.nrrd", "*.mha", "*.mhd", "*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff")


class RunMismatchError(ValueError):
    """The output folder holds results of a run with other settings."""


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


def read_result_lines(path: Path) -> list[dict]:
    """Every complete line of results.jsonl; a line cut short by an interruption is ignored."""
    if not path.exists():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict) and "id" in line and "metrics" in line:
            lines.append(line)
    return lines


def keep_finished_lines(path: Path) -> list[dict]:
    """The lines a resumed run keeps: complete ones whose answer was had. The file is rewritten without the others
    (a cut-short line, a failed request), so their samples are scored again and appear once."""
    lines = read_result_lines(path)
    finished = [line for line in lines if not line.get("answer_error")]
    if path.exists() and len(path.read_text(encoding="utf-8").splitlines()) != len(finished):
        temporary = path.with_suffix(".tmp")
        temporary.write_text("".join(json.dumps(line) + "\n" for line in finished), encoding="utf-8")
        os.replace(temporary, path)
    return finished


def claim_output_dir(output_dir: Path, run: Mapping[str, Any]) -> None:
    """Refuses a folder whose results came from other settings, then records this run's settings in run.json."""
    output_dir.mkdir(parents=True, exist_ok=True)
    run_path, results_path = output_dir / RUN_FILE, output_dir / RESULTS_FILE
    if run_path.exists() and read_result_lines(results_path):
        earlier = json.loads(run_path.read_text(encoding="utf-8"))
        changed = [key for key in RESUME_KEYS if earlier.get(key) != run.get(key)]
        if changed:
            details = "; ".join(f"{key}: {earlier.get(key)!r} -> {run.get(key)!r}" for key in changed)
            raise RunMismatchError(
                f"{output_dir} holds results of a run with other settings ({details}). Use another --output, "
                "or --restart to delete them."
            )
    run_path.write_text(json.dumps(dict(run), indent=2), encoding="utf-8")


def clear_output(output_dir: Path) -> None:
    """Deletes what an evaluation writes (and nothing else) from `output_dir`."""
    for name in (RESULTS_FILE, RUN_FILE, METRICS_FILE, REPORT_FILE, CHART_FILE):
        (output_dir / name).unlink(missing_ok=True)
    shutil.rmtree(output_dir / OVERLAY_DIR, ignore_errors=True)


def datastore_entries(datastore_dir: Path) -> list[dict]:
    """The final labels of a MONAI Label local datastore as {"image", "label", "label_info"} (read only)."""
    from monailabel.datastore.local import LocalDatastore

    if not (Path(datastore_dir) / "datastore_v2.json").is_file():
        raise FileNotFoundError(f"{datastore_dir} is not a MONAI Label datastore (no datastore_v2.json)")
    datastore = LocalDatastore(str(datastore_dir), extensions=DATASTORE_EXTENSIONS, read_only=True)
    return final_label_entries(datastore)


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
        max_tokens=args.max_new_tokens,
        seed=args.seed,
        repetition_penalty=args.repetition_penalty,
    )


def describe_run(args: argparse.Namespace) -> dict:
    """The settings recorded in run.json and metrics.json (absolute paths, so a resume from elsewhere matches)."""

    def absolute(path: Optional[str]) -> Optional[str]:
        return str(Path(path).absolute()) if path else None

    generated = args.backend != "answers"
    local_model = args.backend in ("transformers", "vllm") and Path(args.model).exists()
    return {
        "tool": "python -m monailabel_app.evaluate",
        "data": absolute(args.datastore or args.data),
        "source": "datastore" if args.datastore else "data",
        "backend": args.backend,
        "model": absolute(args.model) if local_model else args.model if generated else None,
        "base_url": args.base_url if args.backend == "openai" else None,
        "answers": absolute(args.answers) if not generated else None,
        "answers_frame": args.answers_frame if not generated else None,
        "parser": args.parser,
        "think": args.think,
        "template": absolute(args.template),
        "segmenter": args.segmenter,
        "segmenter_checkpoint": absolute(args.segmenter_checkpoint),
        "sampling": sampling_settings(args).to_json() if generated else None,
        "min_pixels": args.min_pixels,
        "max_pixels": args.max_pixels,
    }


def build_answer_source(args: argparse.Namespace) -> AnswerSource:
    """The backend named by --backend; models are loaded here."""
    sampling = sampling_settings(args)
    if args.backend == "answers":
        return AnswersFile(
            args.answers, args.answers_frame, args.min_pixels or QWEN_MIN_PIXELS, args.max_pixels or QWEN_MAX_PIXELS
        )
    if args.backend == "openai":
        reasoner = OpenAIReasoner(
            args.base_url,
            args.model,
            api_key_env=args.api_key_env,
            sampling=sampling,
            max_concurrency=args.concurrency,
            retries=args.retries,
            timeout_s=args.timeout,
            min_pixels=args.min_pixels or QWEN_MIN_PIXELS,
            max_pixels=args.max_pixels or QWEN_MAX_PIXELS,
        )
        return ReasonerAnswers(reasoner, workers=args.concurrency, max_consecutive_errors=args.max_consecutive_errors)
    if args.backend == "vllm":
        reasoner = VllmReasoner(
            args.model,
            sampling,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
            max_model_len=args.max_model_len,
            gpu_memory_utilization=args.gpu_memory_utilization,
            tensor_parallel_size=args.tensor_parallel_size,
        )
        return ReasonerAnswers(reasoner)
    return transformers_answers(args, sampling)


def transformers_answers(args: argparse.Namespace, sampling: SamplingSettings) -> ReasonerAnswers:
    """Greedy `generate` by default; `sample` when a temperature is given. A repetition penalty given on the command
    line replaces the checkpoint's generation_config value, which `generate` applies otherwise."""
    reasoner = TransformersReasoner(
        args.model,
        device=args.device,
        max_new_tokens=sampling.max_tokens,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
    )
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
        max_new_tokens=sampling.max_tokens,
    )
    return ReasonerAnswers(reasoner, generate=sample_one)


def _first_sample(reasoner, image: np.ndarray, prompt: str, **sampling_kwargs):
    return reasoner.sample(image, prompt, **sampling_kwargs)[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m monailabel_app.evaluate",
        description="Score a model's grounding answers at the MedReasoner paper's standard (IoU, pDice, Dice).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data and output")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="U-MRG parquet file (e.g. test.parquet) or folder with index.json")
    source.add_argument("--datastore", help="MONAI Label local datastore folder: its final labels are the data")
    data.add_argument("--output", required=True, help="folder for results.jsonl, metrics.json, report.md, ...")
    data.add_argument("--limit", type=int, default=None, help="only the first N samples")
    data.add_argument("--restart", action="store_true", help="delete earlier results in --output instead of resuming")
    data.add_argument("--overlays", type=int, default=20, help="overlay pictures for the first N samples")
    data.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    answers = parser.add_argument_group("answers")
    answers.add_argument("--backend", choices=BACKENDS, default="transformers")
    answers.add_argument("--model", help="checkpoint folder (transformers, vllm) or served model name (openai)")
    answers.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://gpu-host:8000/v1")
    answers.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    answers.add_argument("--concurrency", type=int, default=4, help="requests in flight (openai)")
    answers.add_argument("--retries", type=int, default=3, help="retries of a failed request (openai)")
    answers.add_argument("--timeout", type=float, default=300.0, help="seconds per request (openai)")
    answers.add_argument(
        "--max-consecutive-errors", type=int, default=20, help="stop (resumably) after this many failures in a row"
    )
    answers.add_argument("--answers", help="answers file (answers backend): results.jsonl, or JSON with id/output")
    answers.add_argument(
        "--answers-frame",
        choices=ANSWER_FRAMES,
        default="original",
        help="frame of answers-file coordinates when a record has none: the stored image or Qwen's smart resize",
    )
    answers.add_argument("--think", action=argparse.BooleanOptionalAction, default=True, help="ask for reasoning")
    answers.add_argument("--template", default=None, help="prompt template file with one {question}")
    answers.add_argument("--min-pixels", type=int, default=None, help="reasoner image size bounds (smart resize)")
    answers.add_argument("--max-pixels", type=int, default=None)
    answers.add_argument("--batch-size", type=int, default=8, help="samples answered per call")

    decoding = parser.add_argument_group("decoding (always sent explicitly; greedy unless a temperature is given)")
    decoding.add_argument("--temperature", type=float, default=0.0)
    decoding.add_argument("--top-p", type=float, default=1.0)
    decoding.add_argument("--max-new-tokens", type=int, default=1024)
    decoding.add_argument("--seed", type=int, default=None)
    decoding.add_argument(
        "--repetition-penalty", type=float, default=None, help="default: the checkpoint's generation_config value"
    )

    engines = parser.add_argument_group("vllm engine")
    engines.add_argument("--tensor-parallel-size", type=int, default=1)
    engines.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    engines.add_argument("--max-model-len", type=int, default=8192)

    scoring = parser.add_argument_group("scoring")
    scoring.add_argument(
        "--parser", choices=PARSERS, default="paper", help="paper: the released evaluation's strict parsing; app: ours"
    )
    scoring.add_argument("--segmenter", default="litemedsam", help="segmenter kind for Dice, or 'none' (no Dice)")
    scoring.add_argument("--segmenter-checkpoint", default=None)
    scoring.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.backend == "answers" and not args.answers:
        parser.error("--backend answers needs --answers FILE")
    if args.backend != "answers" and not args.model:
        parser.error(f"--backend {args.backend} needs --model")
    if args.backend == "openai" and not args.base_url:
        parser.error("--backend openai needs --base-url")


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    output_dir, run = Path(args.output), describe_run(args)
    try:
        if args.restart:
            clear_output(output_dir)
        claim_output_dir(output_dir, run)  # before loading models: a mismatch should fail fast
        source, total = data_source(args)
        segmenter = None
        if args.segmenter != "none":
            segmenter = build_segmenter(args.segmenter, args.segmenter_checkpoint, str(resolve_device(args.device)))
        answers = build_answer_source(args)
        load_report = LoadReport()
        options = RunOptions(
            parser=args.parser,
            think=args.think,
            template=args.template,
            batch_size=max(args.batch_size, args.concurrency if args.backend == "openai" else 1),
            overlays=args.overlays,
            limit=args.limit,
            progress=args.progress,
        )
        samples = load_samples(source, load_report)
        metrics = run_evaluation(samples, answers, segmenter, output_dir, run, options, total, load_report)
    except (
        RunMismatchError,
        ReasonerUnavailableError,
        SegmenterUnavailableError,
        EndpointError,
        EndpointUnreachableError,
        FileNotFoundError,
        ValueError,
    ) as error:
        raise SystemExit(f"error: {error}") from None
    print(summary_line(metrics), file=sys.stderr)
    print(f"wrote {output_dir / REPORT_FILE} and {output_dir / METRICS_FILE}", file=sys.stderr)
    return metrics


def summary_line(metrics: Mapping[str, Any]) -> str:
    overall = metrics["overall"]
    scores = "  ".join(f"{METRIC_LABELS[name]} {overall[name]:.2f}" for name in metrics["metric_names"])
    return f"{scores}  (x100; {metrics['samples']} samples, {metrics['failed']} failed)"


if __name__ == "__main__":
    main()

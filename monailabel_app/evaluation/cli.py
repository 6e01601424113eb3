"""`python -m monailabel_app.evaluate`, the command line: the paper's table (IoU, pDice, Dice for points / box / joint
prompts; overall, per super-category, category and modality; failures count as 0) for any model's answers on
U-MRG-format data.

    python -m monailabel_app.evaluate --data /data/U-MRG-14K/test.parquet \\
        --model /models/MedReasoner-Soft-7B --output runs/medreasoner-soft

Data: a U-MRG parquet, a folder with `index.json`, or (`--datastore`) a MONAI Label datastore's final labels.
Answers (`--backend`): `transformers` or `vllm` (a local checkpoint), `openai` (any OpenAI-compatible endpoint:
`vllm serve`, `python -m monailabel_app.serve`, a hosted model), or `answers` (a file of answers given earlier, e.g.
our `results.jsonl` or the paper's `results.json`): every source is scored by the same code.

The output folder gets `results.jsonl` (one line per sample, written as soon as it is scored), `run.json`,
`metrics.json`, `report.md` and `report.html` (the same report, self-contained), charts and `overlays/`. Running the
same command again resumes: finished samples are skipped, samples whose answer could not be had (a failed request)
are redone, and the totals are computed from all lines. A different configuration in the same folder is refused
(`--restart` starts over); a folder another run is writing to is refused while that run lives.

    python -m monailabel_app.evaluate compare runs/before runs/after --output runs/before-vs-after

compares two runs on their common samples (`evaluation.compare`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from monailabel_app.core.errors import RequestError, UnavailableError
from monailabel_app.reasoning.backends import BACKEND_NAMES
from monailabel_app.reasoning.backends import BACKENDS as BACKENDS_BY_NAME
from monailabel_app.reasoning.frame_bounds import TRAINED_FRAME_MAX_PIXELS

BACKENDS = (*BACKEND_NAMES, "answers")  # the reasoner registry's, and a file of answers given earlier
ANSWER_FRAMES = ("original", "qwen")  # evaluation.answers.ANSWER_FRAMES; a test keeps them equal
PARSERS = ("paper", "app")  # evaluation.scoring.PARSERS; likewise
# The models, torch and the data readers are imported when a run starts, so `--help` and argument errors are quick.


def _sampling(args: argparse.Namespace):
    from monailabel_app.evaluation.sources import sampling_settings

    return sampling_settings(args)


def describe_run(args: argparse.Namespace) -> dict:
    """The settings recorded in run.json and metrics.json (absolute paths, so a resume from elsewhere matches)."""

    def absolute(path: Optional[str]) -> Optional[str]:
        return str(Path(path).absolute()) if path else None

    generated = args.backend != "answers"
    local_model = generated and BACKENDS_BY_NAME[args.backend].weights_here and Path(args.model).exists()
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
        "sampling": _sampling(args).to_json() if generated else None,
        "min_pixels": args.min_pixels,
        "max_pixels": args.max_pixels,
        "limit": args.limit,
    }


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
    data.add_argument(
        "--overlays", type=int, default=3, help="overlay pictures of the N worst, median and best samples"
    )
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
    answers.add_argument(
        "--max-pixels",
        type=int,
        default=TRAINED_FRAME_MAX_PIXELS,
        help="the released checkpoints' training frame (840 x 840); 12845056 for the processor's own bound",
    )
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        from monailabel_app.evaluation.compare_cli import main as compare_main

        return compare_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    try:
        return _run(args)
    except (RequestError, UnavailableError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None


def _run(args: argparse.Namespace) -> dict:
    from monailabel_app.data.loaders import load_samples
    from monailabel_app.evaluation.output_lock import output_lock
    from monailabel_app.evaluation.report import HTML_FILE, METRICS_FILE, REPORT_FILE
    from monailabel_app.evaluation.run import RunOptions, run_evaluation
    from monailabel_app.evaluation.run_folder import claim_output_dir, clear_output
    from monailabel_app.evaluation.sources import build_answer_source, data_source
    from monailabel_app.reasoning.transformers_reasoner import resolve_device
    from monailabel_app.segmentation.factory import build_segmenter

    output_dir, run = Path(args.output), describe_run(args)
    with output_lock(output_dir):  # held from --restart to the last report line
        if args.restart:
            clear_output(output_dir)
        claim_output_dir(output_dir, run)  # before loading models: a mismatch should fail fast
        source, total = data_source(args)
        segmenter = None
        if args.segmenter != "none":
            segmenter = build_segmenter(args.segmenter, args.segmenter_checkpoint, str(resolve_device(args.device)))
        answers = build_answer_source(args)
        options = RunOptions(
            parser=args.parser,
            think=args.think,
            template=args.template,
            batch_size=max(args.batch_size, args.concurrency if args.backend == "openai" else 1),
            overlays=args.overlays,
            limit=args.limit,
            progress=args.progress,
        )
        metrics = run_evaluation(
            lambda report: load_samples(source, report), answers, segmenter, output_dir, run, options, total
        )
    print(summary_line(metrics), file=sys.stderr)
    print(
        f"wrote {output_dir / REPORT_FILE}, {output_dir / HTML_FILE} and {output_dir / METRICS_FILE}", file=sys.stderr
    )
    return metrics


def summary_line(metrics: Mapping[str, Any]) -> str:
    from monailabel_app.evaluation.figures import METRIC_LABELS

    overall = metrics["overall"]
    scores = "  ".join(f"{METRIC_LABELS[name]} {overall[name]:.2f}" for name in metrics["metric_names"])
    return f"{scores}  (x100; {metrics['samples']} samples, {metrics['failed']} failed)"


if __name__ == "__main__":
    main()

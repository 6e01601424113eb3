"""`python -m monailabel_app.evaluate compare RUN_A RUN_B --output DIR`: two evaluation runs compared on their
common samples (`evaluation.compare`), written as compare.md, compare.html and compare.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from monailabel_app.core.errors import RequestError
from monailabel_app.evaluation.compare import MOST_CHANGED, compare_runs, headline, read_run
from monailabel_app.evaluation.compare_report import COMPARE_HTML, COMPARE_MD, write_comparison
from monailabel_app.evaluation.output_lock import output_lock


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m monailabel_app.evaluate compare",
        description="Compare two evaluation runs sample by sample: paired differences, a paired bootstrap and a "
        "Wilcoxon signed-rank test per metric, wins and losses per category, the samples that changed most.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_a", help="output folder of the first run (A, e.g. before retraining)")
    parser.add_argument("run_b", help="output folder of the second run (B, e.g. after retraining)")
    parser.add_argument("--output", required=True, help="folder for compare.md, compare.html, compare.json")
    parser.add_argument("--most-changed", type=int, default=MOST_CHANGED, help="samples listed as changed most")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    if output.resolve() in (Path(args.run_a).resolve(), Path(args.run_b).resolve()):
        raise SystemExit("error: --output must be a folder of its own, not one of the compared runs")
    try:
        with output_lock(output):
            comparison = compare_runs(read_run(args.run_a), read_run(args.run_b), args.most_changed)
            write_comparison(output, comparison)
    except RequestError as error:
        raise SystemExit(f"error: {error}") from None
    print(headline(comparison), file=sys.stderr)
    print(f"wrote {output / COMPARE_MD} and {output / COMPARE_HTML}", file=sys.stderr)
    return comparison

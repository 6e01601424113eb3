"""An evaluation's output folder: its results file, the settings it was made with, and resuming into it.

`results.jsonl` gets one line per scored sample, written as soon as it is scored; `run.json` the settings. Running the
same evaluation again resumes: finished samples are kept, cut-short lines and failed requests are redone. A folder
holding results of other settings is refused (`RunMismatchError`) rather than mixed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from monailabel_app.core.errors import RequestError
from monailabel_app.evaluation.overlays import OVERLAY_DIR
from monailabel_app.evaluation.report import REPORT_FILES

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
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


class RunMismatchError(RequestError):
    """The output folder holds results of a run with other settings."""


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
    """The lines a resumed run keeps: complete ones whose answer was had, one per sample id (the first). The file is
    rewritten without the others (a cut-short line, a failed request, a repeated id), so their samples are scored
    again and appear once."""
    finished, seen = [], set()
    for line in read_result_lines(path):
        if not line.get("answer_error") and line["id"] not in seen:
            seen.add(line["id"])
            finished.append(line)
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
    for name in (RESULTS_FILE, RUN_FILE, *REPORT_FILES):
        (output_dir / name).unlink(missing_ok=True)
    shutil.rmtree(output_dir / OVERLAY_DIR, ignore_errors=True)

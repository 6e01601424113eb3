"""The record of retraining runs in a model folder, light enough for the server to read and update.

`train_stats.json` holds the latest run (`status`: running, completed, failed, stopped; counts and rewards), and
`train_runs/<run>/` each run's checkpoints, kept only for completed runs (`result.json` says so). The server reads
these for `/info` and auto-retraining and marks starts and stops; the run itself (`retraining.py`) writes the rest.
Every write is made under the model folder's run lock (`run_owner.py`): by the run that holds it, or by the server
while no run does, so a killed run's late write can't overwrite a newer run's stats. No Lightning here: serving
imports this.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from monailabel_app.core.json_files import write_json_atomically

STATS_FILE = "train_stats.json"
RUNS_DIR = "train_runs"
RESULT_FILE = "result.json"  # in a run's folder, written by the run when it ends


def write_training_stats(model_dir: str | Path, stats: dict) -> None:
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomically(model_dir / STATS_FILE, stats)


def mark_started(model_dir: str | Path) -> None:
    """Before the run's process starts: the stats say a run is on (the previous run's counts are kept until the new
    run writes its own), so a stop that comes before the run's first word is still recorded as a stop."""
    stats = last_training_stats(model_dir)
    write_training_stats(model_dir, {**stats, "status": "running", "requested_at": time.strftime("%Y-%m-%dT%H:%M:%S")})


def mark_stopped(model_dir: str | Path) -> None:
    """After the server stopped a run (its process is gone): the stats say so, and its folder is removed."""
    stats = last_training_stats(model_dir)
    if stats.get("status") == "running":
        write_training_stats(model_dir, {**stats, "status": "stopped"})
    remove_unfinished_runs(model_dir)


def remove_unfinished_runs(model_dir: str | Path) -> list[str]:
    """Run folders without a completed result (stopped, killed or failed runs) are deleted; returns their names."""
    runs = Path(model_dir) / RUNS_DIR
    removed = []
    if runs.is_dir():
        for run in runs.iterdir():
            if run.is_dir() and _run_status(run) != "completed":
                shutil.rmtree(run, ignore_errors=True)
                removed.append(run.name)
    return removed


def _run_status(run: Path) -> str | None:
    try:
        return json.loads((run / RESULT_FILE).read_text()).get("status")
    except (OSError, ValueError):
        return None


def last_training_stats(model_dir: str | Path) -> dict:
    path = Path(model_dir) / STATS_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}

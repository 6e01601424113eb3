"""Each benchmark runs as benchmarks/README.md writes it (`.venv/bin/python benchmarks/<name>.py`): a researcher's
shell has no PYTHONPATH, and three scripts once stopped at their first import of the app."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


def test_every_benchmark_starts_without_pythonpath(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    runs = {
        script.name: subprocess.Popen(
            [sys.executable, str(script), "--help"],
            cwd=tmp_path,  # not the checkout: nothing found by the working folder either
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for script in SCRIPTS
    }
    failed = {}
    for name, run in runs.items():
        output, _ = run.communicate(timeout=300)
        if run.returncode != 0 or "usage:" not in output:
            failed[name] = output[-800:]
    assert len(runs) >= 10 and not failed, failed

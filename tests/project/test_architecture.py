"""The house rules, checked: imports point down the layers (`.importlinter`, run by `scripts/test.sh` too), and
serving loads no training code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def scratch_copy(tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("monailabel_app", "lib"):
        shutil.copytree(APP_DIR / package, root / package, ignore=ignore)
    shutil.copy(APP_DIR / ".importlinter", root / ".importlinter")
    return root


def test_the_layer_contract_holds_and_catches_an_upward_import(tmp_path):
    root = scratch_copy(tmp_path)
    assert lint_imports(root).returncode == 0  # the copy as it is keeps every contract
    frames = root / "monailabel_app" / "core" / "frames.py"
    frames.write_text(frames.read_text() + "\nfrom monailabel_app.training import config  # an upward import\n")
    broken = lint_imports(root)
    assert (
        broken.returncode != 0
        and "monailabel_app.core is not allowed to import monailabel_app.training" in broken.stdout
    )


def test_serving_loads_no_training_code():
    """The app as MONAI Label loads it (main.py, its task configs) and the server's routes, then the app built and its
    models loaded as a start does, in the demo (its tiny reasoner is built on the first start): no GRPO stack. The
    import-linter contract sees only this app's own imports; DeepSpeed came in through a library's (transformers'
    save_pretrained asks accelerate, which imports DeepSpeed wherever it is installed), so this looks at what is
    loaded."""
    probe = """
import importlib.util, sys, tempfile
# the run's records and its owner (the server reads and stops runs through them) and the options' config: no GRPO
LIGHT = ("config", "run_records", "run_owner")
spec = importlib.util.spec_from_file_location("main", "main.py")
main = importlib.util.module_from_spec(spec)
spec.loader.exec_module(main)
import lib.server.asgi
conf = {"models": "implicit_query", "demo": "true", "model_dir": tempfile.mkdtemp()}
app = main.MedReasonerApp(".", tempfile.mkdtemp(), conf)
app.task_configs["implicit_query"].service.pipeline()  # the load a start begins (lib/configs, GroundingService)
loaded = sorted(n for n in sys.modules if n.split(".")[0] in ("lightning", "lightning_fabric", "deepspeed", "peft")
                or n.startswith("monailabel_app.training.") and n.rsplit(".", 1)[1] not in LIGHT)
print(loaded)
"""
    env = {**os.environ, "PYTHONPATH": str(APP_DIR)}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=APP_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


HELP_PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_module(f"monailabel_app.{sys.argv[0]}", run_name="__main__")
except SystemExit:
    pass
print("LOADED:" + ",".join(m for m in ("torch", "transformers", "lightning", "deepspeed", "vllm") if m in sys.modules))
"""


def test_no_command_lines_help_loads_a_model_library():
    """`python -m monailabel_app.serve|train|evaluate --help` answers at once: no torch, transformers, Lightning."""
    for command in ("serve", "train", "evaluate"):
        run = subprocess.run(
            [sys.executable, "-c", HELP_PROBE, command],
            cwd=APP_DIR,
            env={**os.environ, "PYTHONPATH": str(APP_DIR)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        assert "usage:" in run.stdout, run.stdout[-500:]
        assert run.stdout.strip().splitlines()[-1] == "LOADED:", f"{command} --help: {run.stdout.splitlines()[-1]}"

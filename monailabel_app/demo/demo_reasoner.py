"""The offline demo's reasoner: a tiny format-tuned Qwen2.5-VL written once into the app's model folder.

It always gives the same answer, whatever the image or question: it shows the whole path (reasoner, parser,
segmenter, label) working offline, and nothing about medicine. Every result it produces says so.

A server builds it in a process of its own (`python -m monailabel_app.demo.demo_reasoner FOLDER SERVER_PID`): the
build trains (format tuning) and writes with transformers' `save_pretrained`, which asks accelerate to unwrap the
model, and accelerate imports DeepSpeed wherever it is installed. None of that belongs in a serving process. The
builder dies with the server (a stop during the first start's load leaves no process behind, nor a half-built folder).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from monailabel_app.core.errors import UnavailableError
from monailabel_app.reasoning.identity import TINY_MODEL_MARKER

APP_ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 1800  # format tuning takes seconds to a minute on 2 busy cores
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def ensure_demo_reasoner(folder: str | Path) -> Path:
    """The demo reasoner's folder, built first (in a child process) when it isn't there yet."""
    folder = Path(folder)
    if (folder / TINY_MODEL_MARKER).is_file():
        return folder
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(APP_ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("PYTHONPROFILEIMPORTTIME", None)  # the child's imports are not the server's
    command = [sys.executable, "-m", "monailabel_app.demo.demo_reasoner", str(folder), str(os.getpid())]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UnavailableError(f"Building the demo reasoner in {folder} took over {BUILD_TIMEOUT_S} s") from None
    if done.returncode != 0 or not (folder / TINY_MODEL_MARKER).is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise UnavailableError(f"The demo reasoner could not be built in {folder}: {tail}")
    return folder


def build_demo_reasoner(folder: str | Path) -> Path:
    """Build into a scratch folder and rename, so a crash mid-build never leaves a half-written model behind."""
    from monailabel_app.demo.tiny_models import build_tiny_reasoner

    folder = Path(folder)
    if (folder / TINY_MODEL_MARKER).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        build_tiny_reasoner(scratch, format_tuned=True)
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def die_with(server_pid: int) -> None:
    """SIGTERM when the server's thread that started this ends (the server stopped or died), and on SIGTERM the
    build's `finally` removes its scratch folder."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != server_pid:  # the server was gone before the line above
        sys.exit(1)


if __name__ == "__main__":
    die_with(int(sys.argv[2]))
    build_demo_reasoner(sys.argv[1])

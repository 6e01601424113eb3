"""A private folder per request for its uploads and results, removed when the request is done, whatever happened.

MONAI Label's routes copy uploads into the system temp folder and remove them only after a *successful* response, so
every refused request left its upload behind for good. Here each request gets `<tmp>/medreasoner-requests/<pid>/<id>/`;
the route removes it in `finally` (or after the response is sent, when the response streams a file from it). Folders
of a server that died are removed at the next start, and any folder older than an hour by the next request.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

SCRATCH_ROOT = Path(tempfile.gettempdir()) / "medreasoner-requests"
MAX_AGE_S = 3600


def process_root() -> Path:
    return SCRATCH_ROOT / str(os.getpid())


def new_scratch() -> Path:
    """A fresh, empty folder only this request writes into (0700)."""
    root = process_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    _remove_old(root)
    folder = root / uuid.uuid4().hex
    folder.mkdir(mode=0o700)
    return folder


def remove_scratch(folder: Path | str | None) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def remove_dead_servers() -> None:
    """At start: folders left by server processes that no longer run (a crash, a kill -9)."""
    if not SCRATCH_ROOT.is_dir():
        return
    for entry in SCRATCH_ROOT.iterdir():
        if entry.name.isdigit() and not _alive(int(entry.name)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_old(root: Path) -> None:
    """A response whose client vanished mid-transfer may skip its clean-up; nothing outlives an hour."""
    cutoff = time.time() - MAX_AGE_S
    for entry in root.iterdir():
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:
            pass

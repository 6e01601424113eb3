"""One writer per output folder: two evaluations (or a comparison) started into the same folder would interleave
their result lines and overwrite each other's reports.

The lock is `filelock`'s OS lock (flock on POSIX) on `<folder>/.lock`: the operating system releases it when the
holding process ends, even by a crash or `kill -9`, so a stale lock never needs deleting by hand. Within one process
the same folder's lock is re-entrant on one thread (the command line holds it, then the run takes it again).
Who holds it (pid, host, start time) is written beside it, so the refusal can say which run to wait for.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from monailabel_app.core.errors import RequestError

LOCK_FILE = ".lock"
OWNER_FILE = ".lock-owner.json"


class OutputBusyError(RequestError):
    """Another run is writing to this output folder."""


@contextmanager
def output_lock(folder: Path | str) -> Iterator[None]:
    """Holds the folder's lock for the block; raises `OutputBusyError` at once if another run holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder.resolve() / LOCK_FILE), timeout=0, is_singleton=True)
    try:
        lock.acquire()
    except Timeout:
        raise OutputBusyError(
            f"{folder} is being written by another run ({_owner(folder)}). Wait for it to finish, "
            "or use another --output."
        ) from None
    try:
        if lock.lock_counter == 1:
            (folder / OWNER_FILE).write_text(json.dumps(_me()), encoding="utf-8")
        yield
    finally:
        lock.release()


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _owner(folder: Path) -> str:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        return f"pid {owner['pid']} on {owner['host']} since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "owner unknown"

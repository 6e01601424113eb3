"""A private folder per request for its uploads and results, removed when the request is done, whatever happened.

MONAI Label's routes copy uploads into the system temp folder and remove them only after a *successful* response, so
every refused request left its upload behind for good. Here each request gets `<tmp>/medreasoner-requests/<pid>/<id>/`;
the route removes it in `finally` (or after the response is sent, when the response streams a file from it). Inference
writes its results beside it, in `<pid>-labels/`, for the route to take. A server's folders (and
`medreasoner-requests/` itself when no other server uses it) go when it shuts down, so a start and stop leave the temp
folder as they found it; those of a server that died go at the next start, and any request folder older than an hour
at the next request.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

SCRATCH_ROOT = Path(tempfile.gettempdir()) / "medreasoner-requests"
MAX_AGE_S = 3600
MAKE_TRIES = 3


def process_root() -> Path:
    return SCRATCH_ROOT / str(os.getpid())


def process_folder(use: str = "") -> Path:
    """This process's request folder (`<pid>/`) or one for another use (`<pid>-<use>/`), made if missing (0700)."""
    folder = SCRATCH_ROOT / f"{os.getpid()}-{use}" if use else process_root()
    for attempt in range(MAKE_TRIES):
        try:
            SCRATCH_ROOT.mkdir(exist_ok=True, mode=0o700)
            folder.mkdir(exist_ok=True, mode=0o700)
            break
        except FileNotFoundError:  # another server stopping removed the shared folder between its two mkdirs
            if attempt == MAKE_TRIES - 1:
                raise
    _require_private(SCRATCH_ROOT)
    _require_private(folder)
    return folder


def _require_private(folder: Path) -> None:
    """The shared temp folder is anyone's: a local user could make `medreasoner-requests/` (or a process's folder,
    pids are guessable) first, then swap what is in it and read or replace clinical uploads. A folder here is used only
    if it is a real folder (no link), this server's user's, and closed to everyone else; otherwise the request fails
    with the folder named (remove it, or give the server a TMPDIR of its own)."""
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise RuntimeError(
            f"{folder} is not a private folder of this server's user (a link, another user's, or open to others): "
            "remove it, or start the server with a TMPDIR of its own."
        )


def new_scratch() -> Path:
    """A fresh, empty folder only this request writes into (0700)."""
    root = process_folder()  # while it holds something, no other server removes medreasoner-requests/
    _remove_old(root)
    folder = root / uuid.uuid4().hex
    folder.mkdir(mode=0o700)
    return folder


def remove_scratch(folder: Path | str | None) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def remove_process_scratch() -> None:
    """At shutdown: this process's folders, and the shared one if no other server has a folder in it."""
    _remove_folders_of(lambda pid: pid == os.getpid())
    try:
        SCRATCH_ROOT.rmdir()
    except OSError:  # not empty (another server) or not there
        pass


def remove_dead_servers() -> None:
    """At start: folders left by server processes that no longer run (a crash, a kill -9)."""
    _remove_folders_of(lambda pid: not _alive(pid))


def _owner(name: str) -> Optional[int]:
    pid = name.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _remove_folders_of(chosen) -> None:
    if not SCRATCH_ROOT.is_dir():
        return
    for entry in SCRATCH_ROOT.iterdir():
        pid = _owner(entry.name)
        if pid is not None and chosen(pid):
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

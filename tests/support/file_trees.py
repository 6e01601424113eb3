"""Snapshots of folder trees, to show that requests created, changed or removed no file where they must not."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Iterable


def snapshot(root: str | Path, skip: Iterable[str] = ()) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime in ns) of every file and link under `root`; folders matching a name pattern in
    `skip` (at any depth), or given as a path relative to `root`, are left out."""
    root = Path(root)
    skipped = set(skip)
    found: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        relative_folder = os.path.relpath(folder, root)
        dirs[:] = [
            d
            for d in dirs
            if not any(fnmatch.fnmatch(d, pattern) for pattern in skipped)
            and os.path.normpath(os.path.join(relative_folder, d)) not in skipped
        ]
        for name in files:
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            found[os.path.relpath(path, root)] = (info.st_size, info.st_mtime_ns)
    return found


def differences(before: dict, after: dict) -> dict[str, list[str]]:
    return {
        "created": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(p for p in set(before) & set(after) if before[p] != after[p]),
    }

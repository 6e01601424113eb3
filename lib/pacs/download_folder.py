"""Where a series from the PACS is downloaded before it gets its name: a hidden folder beside it that names the
process downloading, so a start can tell a crash's leftover from another process's download in progress.

A server killed mid-download leaves `.partial-<pid>-<random>` (a CT series: hundreds of MB). Nothing reads it (only a
whole download is renamed to the series' UID), but it held the disk until someone removed it. The next start removes
those whose process is gone; a training or batch process that opens the same cache meanwhile leaves the server's own.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import List

PREFIX = ".partial-"
OWNED = re.compile(r"^\.partial-(\d+)-")


def new_download_folder(parent: str) -> str:
    """A new hidden folder in `parent` (the series' folder's), named for this process."""
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent)


def remove_dead_downloads(parent: str) -> List[str]:
    """Removes the download folders in `parent` whose process has ended (or that name none: an earlier version's);
    returns their names."""
    removed: List[str] = []
    if not os.path.isdir(parent):
        return removed
    for name in sorted(os.listdir(parent)):
        path = os.path.join(parent, name)
        if not name.startswith(PREFIX) or os.path.islink(path) or not os.path.isdir(path):
            continue
        owner = OWNED.match(name)
        if owner and _alive(int(owner.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal sent: only whether the process exists
    except (ProcessLookupError, OverflowError):  # no such process; a number too long to be one (a start crashed)
        return False
    except PermissionError:  # another user's process
        return True
    return True

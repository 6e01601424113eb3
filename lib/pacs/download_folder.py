"""Where a series from the PACS is downloaded before it gets its name: a hidden folder beside it that names the
process downloading, so a start can tell a crash's leftover from another process's download in progress.

A server killed mid-download leaves `.partial-<pid>-<started>-<random>` (a CT series: hundreds of MB). Nothing reads it
(only a whole download is renamed to the series' UID), but it held the disk until someone removed it. The next start
removes those whose process is gone; a training or batch process that opens the same cache meanwhile leaves the
server's own. The process is named by its id and its start time (psutil): in a container a restarted server often
gets the id of the one that was killed, and the id alone would keep that one's leftover for ever.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import List, Optional

import psutil

PREFIX = ".partial-"
OWNED = re.compile(r"^\.partial-(\d{1,10})-(\d{1,16})-")


def new_download_folder(parent: str) -> str:
    """A new hidden folder in `parent` (the series' folder's), named for this process."""
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{_started(os.getpid())}-", dir=parent)


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
        if owner and _started(int(owner.group(1))) in (int(owner.group(2)), None):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(name)
    return removed


def _started(pid: int) -> Optional[int]:
    """When process `pid` started (ms since the epoch, as psutil reads it from the system); 0 when there is none,
    None when it can't be told (another user's process, hidden from this one): its folder is kept."""
    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except psutil.AccessDenied:
        return None
    except (psutil.Error, ValueError, OverflowError):  # no such process (or a zombie), no valid process id
        return 0

"""Publishing a retrained reasoner so a running server picks it up on its next request, never half-written.

Layout under the app's model folder: `reasoner_versions/<name>/` holds each published Hugging Face folder, and
`reasoner` is a symbolic link to the current one. A new version is moved in whole (a rename on the same file system: no
copy of a 15 GB folder), and then the link is swapped with one `os.replace` (atomic on POSIX), so a reader sees the old
model or the new one, never a half-written one. Right before that swap the caller's `may_publish` is asked once more
(a retraining checks that the server that asked for it is still alive, `training/run_owner.py`); if it says no, the
new version goes back where it came from and nothing is published.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from typing import Callable, Optional

from monailabel_app.reasoning.identity import write_version_file

PUBLISHED_LINK = "reasoner"
VERSIONS_DIR = "reasoner_versions"
KEEP_VERSIONS = 2  # the current one and the one before it, to roll back by hand; 7B folders are ~15 GB each
# Test hook, read only by tests (tests/server/test_server_training_restarts.py): seconds to wait after the new version
# is moved in and before the last check and the link swap, so a test can kill the server at that moment. Unset, nothing
# waits.
PUBLISH_PAUSE_ENV = "MEDREASONER_TEST_PUBLISH_PAUSE_S"


class PublishWithdrawnError(RuntimeError):
    """`may_publish` said no at the last moment: the published reasoner is unchanged."""


def published_reasoner(model_dir: str | Path) -> Optional[Path]:
    """The published reasoner's path (the link), or None before the first successful training."""
    link = Path(model_dir) / PUBLISHED_LINK
    return link if (link / "config.json").is_file() else None


def publish_reasoner(
    trained_dir: str | Path,
    model_dir: str | Path,
    version: str,
    base_reasoner: str = "",
    may_publish: Optional[Callable[[], bool]] = None,
) -> Path:
    """Moves `trained_dir` in as `version` and points the link at it; PublishWithdrawnError (nothing published, the
    folder back at `trained_dir`) when `may_publish` says no right before the link swap."""
    model_dir = Path(model_dir)
    versions = model_dir / VERSIONS_DIR
    versions.mkdir(parents=True, exist_ok=True)
    target = versions / version
    write_version_file(trained_dir, version, base_reasoner)  # version and weights digest, computed once, here
    _make_readable(Path(trained_dir))  # safetensors writes 0600; a server running as another user must read it
    shutil.move(str(trained_dir), str(target))
    new_link = model_dir / f".{PUBLISHED_LINK}.new"
    new_link.unlink(missing_ok=True)
    new_link.symlink_to(Path(VERSIONS_DIR) / version)
    if os.environ.get(PUBLISH_PAUSE_ENV):
        time.sleep(float(os.environ[PUBLISH_PAUSE_ENV]))
    if may_publish is not None and not may_publish():
        new_link.unlink(missing_ok=True)
        shutil.move(str(target), str(trained_dir))
        raise PublishWithdrawnError("not published: whoever asked for this reasoner is gone")
    os.replace(new_link, model_dir / PUBLISHED_LINK)
    prune_oldest(versions, keep=target)
    return model_dir / PUBLISHED_LINK


def _make_readable(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(path.stat().st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def prune_oldest(folder: Path, keep: Path, count: int = KEEP_VERSIONS) -> None:
    """Delete all but the newest `count` sub-folders of `folder` (never `keep`)."""
    newest_last = sorted((p for p in folder.iterdir() if p.is_dir()), key=os.path.getmtime)
    for old in newest_last[:-count]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)

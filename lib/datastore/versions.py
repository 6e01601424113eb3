"""Earlier versions of images and labels, kept when a newer one replaces them or they are deleted.

Slicer re-uploads a volume under the same name and resubmits the final label on every Submit; a careless upload or a
DELETE must not destroy what a clinician saved. So the file that is about to be replaced or deleted is kept in
`<studies>/.versions/<image id>/`, named `<UTC time>_<what><ext>` (what: `image` or `label-<tag>`), with a `.json`
beside it holding its info, why it was kept and when. The newest `keep` entries per image id stay; older ones are
deleted. To get one back, PUT the file again (image or label, same id), or copy it back by hand and restart. The
folder name starts with a dot, so the datastore never lists it.

A file about to be replaced stays under its name until the new one is renamed over it: it is first hard-linked
into the version folder (`keep_link`; a copy where the disk can't link), so at every instant the datastore's name
holds a whole file. A deleted one is moved there (`keep_file`, a rename). Either way the file comes first and its
`.json` second, both written whole (`atomic_file.py`); `repair` mends what a crash between the two left.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, List, Optional

from lib.datastore.atomic_file import (
    PARTIAL_SUFFIX,
    copy_atomically,
    file_sha256,
    fsync_folder,
    make_folder,
    write_atomically,
)

logger = logging.getLogger(__name__)

VERSIONS_DIR = ".versions"
RECOVERED = "found at a start without its record (a save or delete was interrupted)"

# (image id, what, extension) -> the datastore file that version was kept from, for telling a leftover link of a
# file still in place from a kept version that lost its record
CurrentFile = Callable[[str, str, str], Optional[str]]


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class VersionStore:
    def __init__(self, studies: str | Path, keep: int):
        self.root = Path(studies) / VERSIONS_DIR
        self.keep = keep

    def keep_file(self, image_id: str, what: str, file: str | Path, extension: str, info: dict, reason: str) -> Path:
        """Moves `file` (already id-checked by the caller) into the image's version folder; returns its new path."""
        target = self._target(image_id, what, extension)
        os.rename(file, target)  # same disk (inside the studies folder): never a copy
        fsync_folder(str(target.parent))
        fsync_folder(os.path.dirname(os.path.abspath(file)))
        return self._record(target, what, info, reason)

    def keep_link(self, image_id: str, what: str, file: str | Path, extension: str, info: dict, reason: str) -> Path:
        """Keeps `file` in the image's version folder and leaves it in place (the caller renames its successor over
        it, or removes it); returns the version's path."""
        target = self._target(image_id, what, extension)
        try:
            os.link(file, target, follow_symlinks=False)  # a link an admin placed is kept as a link
            fsync_folder(str(target.parent))
        except OSError:  # a disk without hard links
            copy_atomically(str(file), str(target))
        return self._record(target, what, info, reason)

    def list(self, image_id: str) -> list[dict[str, Any]]:
        """Newest first: what was kept, why and when (the info is in the `.json` files)."""
        folder = self.root / image_id
        if not folder.is_dir():
            return []
        records = []
        for path in sorted(folder.glob("*.json"), reverse=True):
            record = _read(path)
            if record:
                records.append({k: record.get(k) for k in ("file", "what", "reason", "kept_at")})
        return records

    def repair(self, current_file: CurrentFile) -> List[str]:
        """Mends what a crash left in the version folders (the caller holds the datastore's lock): a `.partial` is
        removed; a record whose file is missing is removed; a file without its record is removed when it is the
        datastore file it was kept from (a link made just before the crash, the file still in place), else given a
        record (so it is listed and can be restored). Returns what it did, one line each."""
        done: List[str] = []
        if not self.root.is_dir():
            return done
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()):
            changed = False
            for path in sorted(folder.iterdir()):
                where = f"{VERSIONS_DIR}/{folder.name}/{path.name}"
                if path.name.endswith(PARTIAL_SUFFIX):
                    path.unlink()
                    done.append(f"removed an unfinished write: {where}")
                elif path.suffix == ".json" and not _kept_file_of(path):
                    path.unlink()
                    done.append(f"removed a version record without its file: {where}")
                else:
                    continue
                changed = True
            for path in sorted(folder.iterdir()):
                parsed = _parse(path.name)
                if path.suffix == ".json" or path.name.startswith(".") or not parsed:
                    continue
                stamp, what, extension = parsed
                if (folder / f"{stamp}_{what}.json").exists():
                    continue
                where = f"{VERSIONS_DIR}/{folder.name}/{path.name}"
                current = current_file(folder.name, what, extension)
                if current and os.path.isfile(current) and _same_file(current, path):
                    path.unlink()
                    done.append(f"removed a link to a file still in place, made before an interrupted save: {where}")
                else:
                    self._record(path, what, {}, RECOVERED)
                    done.append(f"gave a kept version its missing record: {where}")
                changed = True
            if changed:
                fsync_folder(str(folder))
        for line in done:
            logger.warning(f"Datastore repair at start: {line}")
        return done

    def _target(self, image_id: str, what: str, extension: str) -> Path:
        folder = self.root / image_id
        make_folder(str(folder))
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        return folder / f"{stamp}_{what}{extension}"

    def _record(self, target: Path, what: str, info: dict, reason: str) -> Path:
        stamp = target.name.split("_", 1)[0]
        record = {"file": target.name, "what": what, "reason": reason, "kept_at": utc_now(), "info": info}
        write_atomically(
            str(target.with_name(f"{stamp}_{what}.json")), json.dumps(record, indent=2, default=str).encode()
        )
        self._prune(target.parent)
        return target

    def _prune(self, folder: Path) -> None:
        """The file first, then its record: a crash between leaves a record without a file, which `repair` removes
        (the other order would leave a file that `repair` would list again)."""
        records = sorted(folder.glob("*.json"), reverse=True)
        for old in records[self.keep :]:
            record = _read(old) or {}
            kept = folder / str(record.get("file", ""))
            if record.get("file") and (kept.is_file() or kept.is_symlink()) and kept.parent == folder:
                kept.unlink()
            old.unlink(missing_ok=True)
        if len(records) > self.keep:
            fsync_folder(str(folder))


def _parse(name: str) -> Optional[tuple[str, str, str]]:
    """`<stamp>_<what><ext>` -> (stamp, what, ext); what is `image` or `label-<tag>` (tags have no dots)."""
    stamp, _, rest = name.partition("_")
    what, dot, extension = rest.partition(".")
    if not stamp or not what or not dot:
        return None
    return stamp, what, f".{extension}"


def _kept_file_of(record_path: Path) -> bool:
    """Whether a record is readable and its file is there."""
    record = _read(record_path)
    name = str((record or {}).get("file") or "")
    kept = record_path.parent / name
    return bool(name) and "/" not in name and (kept.is_file() or kept.is_symlink())


def _same_file(a: str, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) or same_file_content(a, b)
    except OSError:
        return False


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def same_file_content(a: str | Path, b: str | Path) -> bool:
    return os.path.getsize(a) == os.path.getsize(b) and file_sha256(str(a)) == file_sha256(str(b))

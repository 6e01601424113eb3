"""Earlier versions of images and labels, kept when a newer one replaces them or they are deleted.

Slicer re-uploads a volume under the same name and resubmits the final label on every Submit; a careless upload or a
DELETE must not destroy what a clinician saved. So the file that is about to be replaced or deleted is moved (never
copied: a rename on the same disk) into `<studies>/.versions/<image id>/`, named `<UTC time>_<what><ext>` (what:
`image` or `label-<tag>`), with a `.json` beside it holding its info, why it was kept and when. The newest
`keep` entries per image id stay; older ones are deleted. To get one back, PUT the file again (image or label, same
id), or copy it back by hand and restart. The folder name starts with a dot, so the datastore never lists it.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

VERSIONS_DIR = ".versions"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class VersionStore:
    def __init__(self, studies: str | Path, keep: int):
        self.root = Path(studies) / VERSIONS_DIR
        self.keep = keep

    def keep_file(self, image_id: str, what: str, file: str | Path, extension: str, info: dict, reason: str) -> Path:
        """Moves `file` (already id-checked by the caller) into the image's version folder; returns its new path."""
        folder = self.root / image_id
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = folder / f"{stamp}_{what}{extension}"
        shutil.move(str(file), target)
        record = {"file": target.name, "what": what, "reason": reason, "kept_at": utc_now(), "info": info}
        target.with_name(f"{stamp}_{what}.json").write_text(json.dumps(record, indent=2, default=str))
        self._prune(folder)
        return target

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

    def _prune(self, folder: Path) -> None:
        records = sorted(folder.glob("*.json"), reverse=True)
        for old in records[self.keep :]:
            record = _read(old) or {}
            kept = folder / str(record.get("file", ""))
            if record.get("file") and kept.is_file() and kept.parent == folder:
                kept.unlink()
            old.unlink(missing_ok=True)


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def file_digest(path: str | Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def same_file_content(a: str | Path, b: str | Path) -> bool:
    return os.path.getsize(a) == os.path.getsize(b) and file_digest(a) == file_digest(b)

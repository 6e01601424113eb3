"""What a crash (a killed server, a power cut) can leave in a datastore, found and mended at the next start, before
MONAI Label reads the index or reconciles it with the files.

- `.<name>.partial` beside an image or a label: a write that did not finish. If the index already records it (its
  `saved_sha256` is the partial's), the save had been committed and only the rename was missing: the partial is
  renamed into place. Otherwise it is removed: the save was never answered, and the file it would have replaced is
  still whole under its name.
- `.datastore_v2.json.partial` (or MONAI Label's `datastore_v2.json.partial`): an index write that did not finish;
  the index itself is whole (it is only ever replaced by a rename). Removed.
- an index that can't be read (written in place by an older version and cut off): kept aside as
  `.datastore_v2.json.unreadable-<time>`; MONAI Label then indexes the folder's files again.
- the version folder's leftovers: see `VersionStore.repair`.

Each thing done is one log line with the file's place in the datastore (ids and tags, never label info).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from lib.datastore.atomic_file import file_sha256, final_name, fsync_folder

logger = logging.getLogger(__name__)

SHA_KEY = "saved_sha256"  # in an image's or label's info: the SHA-256 of the file the index entry was written for


def repair_index_and_files(datastore_path: str, config_path: str, images_dir: str, labels_dir: str) -> List[str]:
    """Mends the index file and the image and label folders (the caller holds the datastore's lock); returns what it
    did, one line each."""
    done: List[str] = []
    config_name = os.path.basename(config_path)
    for leftover in (f".{config_name}.partial", f"{config_name}.partial"):
        path = os.path.join(datastore_path, leftover)
        if os.path.lexists(path):
            os.unlink(path)
            done.append(f"removed an unfinished write of the index ({leftover})")
    index = _read_index(config_path, done)
    images_dir = str(index.get("images_dir", images_dir)) if index else images_dir
    labels_dir = str(index.get("labels_dir", labels_dir)) if index else labels_dir
    committed = _committed_files(index, datastore_path, images_dir, labels_dir)
    image_folder = os.path.join(datastore_path, images_dir)
    label_root = os.path.join(datastore_path, labels_dir)
    folders = [image_folder]
    if os.path.isdir(label_root):
        folders += [os.path.join(label_root, tag) for tag in sorted(os.listdir(label_root))]
    for folder in folders:
        if os.path.isdir(folder) and not os.path.islink(folder):
            _finish_partials(folder, datastore_path, committed, done)
    for line in done:
        logger.warning(f"Datastore repair at start: {line}")
    return done


def _read_index(config_path: str, done: List[str]) -> Optional[Dict[str, Any]]:
    if not os.path.exists(config_path):
        return None
    try:
        with open(config_path) as stream:
            index = json.load(stream)
        if isinstance(index, dict) and isinstance(index.get("objects", {}), dict):
            return index
    except (OSError, ValueError):
        pass
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    folder, name = os.path.split(config_path)
    aside = os.path.join(folder, f".{name}.unreadable-{stamp}")
    os.replace(config_path, aside)
    fsync_folder(folder)
    done.append(f"the index could not be read: kept aside as {os.path.basename(aside)}, the files are indexed again")
    return None


def _committed_files(index: Optional[Dict[str, Any]], root: str, images_dir: str, labels_dir: str) -> Dict[str, str]:
    """Real path of each file the index records -> the SHA-256 recorded for it (only those with one)."""
    committed: Dict[str, str] = {}
    for image_id, entry in ((index or {}).get("objects") or {}).items():
        if not isinstance(entry, dict):
            continue
        image = entry.get("image") or {}
        _note(committed, os.path.join(root, images_dir), image_id, image)
        for tag, label in (entry.get("labels") or {}).items():
            _note(committed, os.path.join(root, labels_dir, str(tag)), image_id, label)
    return committed


def _note(committed: Dict[str, str], folder: str, entry_id: str, model: Any) -> None:
    if isinstance(model, dict) and isinstance(model.get("info"), dict) and model["info"].get(SHA_KEY):
        path = os.path.join(folder, f"{entry_id}{model.get('ext', '')}")
        committed[os.path.realpath(path)] = str(model["info"][SHA_KEY])


def _finish_partials(folder: str, root: str, committed: Dict[str, str], done: List[str]) -> None:
    changed = False
    for name in sorted(os.listdir(folder)):
        target = final_name(name)
        partial = os.path.join(folder, name)
        if not target or not os.path.isfile(partial) or os.path.islink(partial):
            continue
        where = os.path.relpath(os.path.join(folder, target), root)
        recorded = committed.get(os.path.realpath(os.path.join(folder, target)))
        if recorded and file_sha256(partial) == recorded:
            os.replace(partial, os.path.join(folder, target))
            done.append(f"finished an interrupted save the index had recorded: {where}")
        else:
            os.unlink(partial)
            done.append(f"removed an unfinished write (never answered; the earlier file is kept): {where}")
        changed = True
    if changed:
        fsync_folder(folder)

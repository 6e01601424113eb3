"""Which reasoner answers: its folder, where it came from, its version and a digest of its weights.

Every result and `/info` carry this, so an answer in the archive can be traced to the exact weights that gave it:
- `source`: `published` (the last reasoner retraining published into the model folder) or `configured`
  (`--conf reasoner`);
- `version`: a published reasoner's run name; a hub checkpoint's commit (the snapshot folder it was loaded from);
- `sha256`: a digest over the weight files (`name sha256` per `*.safetensors`, sorted): computed once at publish time
  and kept in the version's `medreasoner_version.json`; for a hub snapshot from the file names the hub verified on
  download (blobs are named by their SHA-256); for any other folder computed when the model is loaded (a 7B model
  reads 15 GB once: a few seconds), and remembered while the files are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Optional

VERSION_FILE = "medreasoner_version.json"
TINY_MODEL_MARKER = (
    "tiny_model.json"  # in a checkpoint folder: it is a tiny test model (monailabel_app.demo), not a real one
)
_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")
_digests: dict[tuple, str] = {}
_digests_lock = threading.Lock()


def weights_digest(folder: str | Path) -> Optional[str]:
    """The digest of a local checkpoint folder's `*.safetensors` files, or None when it has none."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    key = (str(folder.resolve()),) + tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    with _digests_lock:
        if key in _digests:
            return _digests[key]
    lines = [f"{f.name} {_file_sha256(f)}" for f in files]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    with _digests_lock:
        _digests[key] = digest
    return digest


def _file_sha256(path: Path) -> str:
    """A hub snapshot's file is a link to a blob named by its SHA-256 (checked by the hub client on download)."""
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if target.parent.name == "blobs" and _SHA256_NAME.match(target.name):
            return target.name
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_version_file(folder: str | Path, version: str, base_reasoner: str) -> dict:
    """At publish time: the version record a server reads instead of hashing the weights again."""
    record = {"version": version, "sha256": weights_digest(folder), "base_reasoner": str(base_reasoner)}
    (Path(folder) / VERSION_FILE).write_text(json.dumps(record, indent=2))
    return record


def describe_reasoner(path: str, source: str, compute_digest: bool = False) -> dict:
    """`{"path", "source", "version", "sha256"}`; `compute_digest=False` never reads weights (for `/info`)."""
    identity = {"path": path, "source": source, "version": None, "sha256": None}
    folder = Path(path)
    if not folder.is_dir():
        folder = _hub_snapshot(path) or folder
    recorded = folder / VERSION_FILE
    if recorded.is_file():
        try:
            record = json.loads(recorded.read_text())
            identity.update(version=record.get("version"), sha256=record.get("sha256"))
            return identity
        except ValueError:
            pass
    if folder.parent.name == "snapshots":
        identity["version"] = folder.name  # the hub commit
    if folder.is_dir() and compute_digest:
        identity["sha256"] = weights_digest(folder)
    elif folder.is_dir():
        identity["sha256"] = _known_digest(folder)
    return identity


def _known_digest(folder: Path) -> Optional[str]:
    files = sorted(folder.glob("*.safetensors"))
    key = (str(folder.resolve()),) + tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    with _digests_lock:
        return _digests.get(key)


def _hub_snapshot(model_id: str) -> Optional[Path]:
    """The local snapshot folder of a hub id, if it was downloaded (no network)."""
    if "/" not in model_id or os.path.isabs(model_id):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # an id the hub client can't parse is simply not cached
        return None
    return Path(config).parent if isinstance(config, str) else None

"""Writing a JSON file so a reader sees the old content or the new one, never half of it."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomically(path: Path, payload: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    os.replace(partial, path)

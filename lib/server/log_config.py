"""MONAI Label's logging configuration, kept in the app's `logs/` folder rather than left in the temp folder.

`monailabel start_server` without `--log_config` writes its configuration (its own `logging.json` with the app's log
file filled in) to a new file in the temp folder at every start, and never removes it. `scripts/start.sh` passes
`--log_config` with the file written here, the same configuration in `<app>/logs/logging.json` (replaced whole, so
servers starting side by side never read half a file).

    python -m lib.server.log_config      # writes <app>/logs/logging.json, prints its path
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[2]
LOG_FILE = "app.log"  # MONAI Label's name for the server's log


def monailabel_template() -> Path:
    """MONAI Label's own configuration, with `${LOGDIR}` and `${LOGFILE}` to fill in (found without importing it)."""
    return Path(importlib.util.find_spec("monailabel").origin).parent / "logging.json"


def write_log_config(app_dir: Path = APP_DIR) -> Path:
    log_dir = Path(app_dir).resolve() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    text = monailabel_template().read_text()
    for name, value in (("${LOGDIR}", log_dir), ("${LOGFILE}", log_dir / LOG_FILE)):
        text = text.replace(name, json.dumps(str(value))[1:-1])  # as a JSON string's content
    path = log_dir / "logging.json"
    with tempfile.NamedTemporaryFile("w", dir=log_dir, prefix=".logging-", suffix=".json", delete=False) as stream:
        stream.write(text)
    os.chmod(stream.name, 0o644)
    os.replace(stream.name, path)
    return path


if __name__ == "__main__":
    print(write_log_config())

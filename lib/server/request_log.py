"""What the server's log says about requests, for an admin reading it: one line per answered question, and the
DICOMweb proxy's per-request lines only at debug level.

OHIF opens a study with dozens of DICOMweb requests through the server's proxy, and httpx logs each at INFO ("HTTP
Request: GET ..."): more than half of a short session's log. They are demoted to DEBUG (shown when the server's log
level is DEBUG, e.g. `monailabel start_server --log_level DEBUG`). An answered question gets one INFO line: its answer
id, task, image id, status, latency and the reasoner's version (no question, reasoning or answer text: docs/security.md,
What is logged where).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Optional

DEMOTED_LOGGERS = ("httpx", "httpcore")
logger = logging.getLogger("medreasoner.answers")


class DemoteToDebug(logging.Filter):
    """Turns a record into a DEBUG one, passed on only when its logger would show DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def demote_proxy_lines() -> None:
    for name in DEMOTED_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(existing, DemoteToDebug) for existing in target.filters):
            target.addFilter(DemoteToDebug())


def log_answer(model: str, image_id: Optional[str], answer: Mapping[str, Any], started: float, user: Optional[str]):
    """The one INFO line of an answered question."""
    version = answer.get("reasoner_version") or {}
    label = version.get("version") or (version.get("sha256") or "")[:12] or answer.get("reasoner") or "?"
    by = f" by {user}" if user else ""
    logger.info(
        f"Answered {answer.get('answer_id') or '-'}: {model} on {image_id or 'an uploaded image'}{by}, "
        f"{answer.get('status') or '?'}, {time.monotonic() - started:.2f} s, reasoner {label}"
    )

"""Test support: waiting for what another process does (a file appears, a process ends), with a bound, not a timing."""

from __future__ import annotations

import time
from typing import Callable


def wait_until(condition: Callable[[], object], timeout_s: float = 30, what: str = "condition", server=None) -> None:
    """Returns once `condition()` holds; TimeoutError naming `what` after `timeout_s`, with `server`'s log tail when
    given (anything with `log_tail()`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not within {timeout_s}s\n{server.log_tail() if server else ''}")

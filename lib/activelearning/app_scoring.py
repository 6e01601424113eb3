"""Scoring runs on one background thread of the server process, not in MONAI Label's subprocess.

MONAI Label starts every scoring run as a new process that builds the whole app again; for this app that would load
the reasoner (a 7B model) at start, after every "Next Sample" and after every training. Here the runs use the models
the server already holds. One run at a time: a run asked for while one is going is queued once (asking ten times
while busy means one more run, not ten).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

logger = logging.getLogger(__name__)


class InProcessScoring:
    def __init__(self, run_method: Callable[[str], dict]) -> None:
        self._run_method = run_method
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._running = False
        self._runs = 0
        self._last: dict[str, dict] = {}

    def request(self, methods: Iterable[str]) -> dict:
        """Queue `methods` (once each) and start the worker if it is idle; returns the status."""
        with self._lock:
            for method in methods:
                if method not in self._pending:
                    self._pending.append(method)
            if not self._running and self._pending:
                self._running = True
                threading.Thread(target=self._work, name="scoring", daemon=True).start()
        return self.status()

    def status(self) -> dict:
        with self._lock:
            return {
                "running": self._running,
                "pending": list(self._pending),
                "runs": self._runs,
                "last": dict(self._last),
            }

    def _work(self) -> None:
        try:
            self._run_pending()
        finally:  # whatever ended the loop, a later request starts a new worker
            with self._lock:
                self._running = False

    def _run_pending(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                method = self._pending.pop(0)
            started = time.time()
            try:
                outcome = {"status": "done", "result": self._run_method(method)}
            except Exception as error:  # a failed run is reported, and the next one still runs
                logger.exception(f"Scoring method {method} failed")
                outcome = {"status": "failed", "error": str(error)[:500]}
            with self._lock:
                self._runs += 1
                self._last[method] = {**outcome, "started": started, "finished": time.time()}

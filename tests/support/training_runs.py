"""Test support: waiting on a retraining the real server runs (MONAI Label's `GET /train/` status)."""

from __future__ import annotations

import time

import requests


def wait_for_training(server, timeout_s: float = 600) -> dict:
    """The train task's status once it is neither SUBMITTED nor RUNNING; TimeoutError with the server's log tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = requests.get(f"{server.url}/train/", timeout=30).json()
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            return task
        time.sleep(2)
    raise TimeoutError(f"training still running after {timeout_s}s:\n{server.log_tail()}")

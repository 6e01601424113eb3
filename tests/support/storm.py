"""Many clients at once against a running server: a bounded storm of hostile requests, and a timed mixed load.

Each client thread keeps one `requests.Session` (keep-alive, as viewers do), so a connection the server drops shows up
as an error on the client's next request. Used by `tests/server/test_server_load.py` and `benchmarks/server_storm.py`.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from tests.support.hostile_requests import CATALOGUE, good_request


@dataclass
class Outcome:
    statuses: Counter = field(default_factory=Counter)  # (kind, status) -> count; kind "good" or "bad"
    errors: list = field(default_factory=list)  # (name, repr of the exception): a dropped or refused connection
    retry_after_missing: int = 0  # 503 answers without a Retry-After header
    latencies: dict = field(default_factory=lambda: {"good": [], "bad": []})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, name: str, started: float, response=None, error=None) -> None:
        with self.lock:
            if error is not None:
                self.errors.append((name, repr(error)[:300]))
                return
            self.statuses[(kind, response.status_code)] += 1
            self.latencies[kind].append(time.perf_counter() - started)
            if response.status_code == 503 and "retry-after" not in {k.lower() for k in response.headers}:
                self.retry_after_missing += 1

    def count(self, kind: str | None = None) -> int:
        return sum(n for (k, _), n in self.statuses.items() if kind in (None, k)) + (
            len(self.errors) if kind is None else 0
        )

    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500 and status != 503)


def _send(outcome: Outcome, session: requests.Session, url: str, kind: str, name: str, send) -> None:
    started = time.perf_counter()
    try:
        outcome.record(kind, name, started, response=send(session, url))
    except requests.RequestException as error:
        outcome.record(kind, name, started, error=error)


def storm(url: str, total: int = 600, threads: int = 8, good_every: int = 10, seed: int = 0) -> Outcome:
    """`total` requests from `threads` clients: the hostile catalogue in a shuffled cycle, every `good_every`-th a
    good question."""
    rng = random.Random(seed)
    plan = []
    for number in range(total):
        if number % good_every == good_every - 1:
            plan.append(("good", "good question", good_request))
        else:
            plan.append(("bad",) + CATALOGUE[rng.randrange(len(CATALOGUE))])
    outcome = Outcome()
    chunks = [plan[i::threads] for i in range(threads)]

    def client(chunk) -> None:
        session = requests.Session()
        for kind, name, send in chunk:
            _send(outcome, session, url, kind, name, send)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(client, chunks))
    return outcome


def load(url: str, seconds: float = 60, clients: int = 16, seed: int = 0) -> Outcome:
    """`clients` clients, each alternating a good question and a hostile request, until `seconds` have passed."""
    outcome = Outcome()
    deadline = time.monotonic() + seconds

    def client(number: int) -> None:
        rng = random.Random(seed + number)
        session = requests.Session()
        good = number % 2 == 0
        while time.monotonic() < deadline:
            if good:
                _send(outcome, session, url, "good", "good question", good_request)
            else:
                _send(outcome, session, url, "bad", *CATALOGUE[rng.randrange(len(CATALOGUE))])
            good = not good

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return outcome

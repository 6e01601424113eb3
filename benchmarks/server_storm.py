"""The hardened server under hostile load: a storm of bad requests and a crowd of clients, with the server's memory.

    .venv/bin/python benchmarks/server_storm.py [--storm 1001] [--threads 8] [--load-seconds 60] [--clients 16]

Starts `monailabel start_server` with this app (tiny format-tuned reasoner, real LiteMedSAM) on 127.0.0.1, warms it
(one good question and every hostile request of `tests/support/hostile_requests.py` once), then:
1. the storm: `--storm` requests from `--threads` keep-alive clients, the hostile catalogue shuffled with a good
   question every tenth; resident memory of the server process after warm-up and after the storm;
2. the load: `--clients` clients alternating a good question and a hostile request for `--load-seconds`;
3. the answer parsers on 1 MB of adversarial text (unclosed tags), in seconds.
It prints the status counts, errors (dropped connections), latency percentiles and memory, and writes them to
`benchmarks/results/server_storm.json`. Nothing here asserts a figure; the tests assert behaviour.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monailabel_app.demo.sample_studies import write_sample_studies  # noqa: E402
from monailabel_app.demo.tiny_models import build_tiny_reasoner  # noqa: E402
from monailabel_app.evaluation.reference_parser import parse_reference_answer  # noqa: E402
from monailabel_app.reasoning.answer_parser import parse_answer  # noqa: E402
from tests.support.hostile_requests import CATALOGUE, good_request  # noqa: E402
from tests.support.monailabel_server import MonaiLabelServer  # noqa: E402
from tests.support.storm import Outcome, load, storm  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "server_storm.json"


def resident_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return round(sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20, 1)


def summary(outcome: Outcome, seconds: float) -> dict:
    def percentiles(values: list[float]) -> dict:
        if not values:
            return {}
        ordered = sorted(values)
        return {
            "p50_s": round(statistics.median(ordered), 3),
            "p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
            "max_s": round(ordered[-1], 3),
        }

    return {
        "requests": outcome.count(),
        "seconds": round(seconds, 1),
        "status_counts": {f"{kind} {status}": n for (kind, status), n in sorted(outcome.statuses.items())},
        "server_errors_5xx": outcome.server_errors(),
        "connection_errors": len(outcome.errors),
        "503_without_retry_after": outcome.retry_after_missing,
        "good_latency": percentiles(outcome.latencies["good"]),
        "bad_latency": percentiles(outcome.latencies["bad"]),
    }


def parser_seconds(megabytes: float = 1.0) -> dict:
    size = int(megabytes * 2**20)
    figures = {}
    for opening in ("<think>", "<answer>{"):
        text = (opening * (size // len(opening) + 1))[:size]
        for name, parse in (("app", lambda t: parse_answer(t, 1000, 1000)), ("reference", parse_reference_answer)):
            started = time.perf_counter()
            parse(text)
            figures[f"{name} parser, {opening!r} x {size // len(opening):,}"] = round(time.perf_counter() - started, 4)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storm", type=int, default=1001)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--malloc-arena-max", default="2", help="as scripts/start.sh sets it; '' for glibc's default")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="storm-bench-"))
    write_sample_studies(scratch / "studies")
    reasoner = build_tiny_reasoner(scratch / "reasoner", seed=0, format_tuned=True)
    conf = {"models": "implicit_query", "reasoner": str(reasoner), "max_new_tokens": "96"}
    env = {"MALLOC_ARENA_MAX": args.malloc_arena_max} if args.malloc_arena_max else {}
    server = MonaiLabelServer(scratch / "studies", conf, scratch / "server.log", env=env).start()
    try:
        session = requests.Session()
        good_request(session, server.url)
        for _, send in CATALOGUE:
            send(session, server.url)
        pid = server.process.pid
        report = {"catalogue_entries": len(CATALOGUE), "malloc_arena_max": args.malloc_arena_max or "glibc default"}
        report["memory_mb_after_warm_up"] = resident_mb(pid)
        started = time.perf_counter()
        report["storm"] = summary(storm(server.url, args.storm, args.threads), time.perf_counter() - started)
        report["memory_mb_after_storm"] = resident_mb(pid)
        started = time.perf_counter()
        report["load"] = summary(load(server.url, args.load_seconds, args.clients), time.perf_counter() - started)
        report["memory_mb_after_load"] = resident_mb(pid)
        report["load"]["clients"] = args.clients
        report["next_good_request"] = good_request(requests.Session(), server.url).status_code
    finally:
        server.stop()
    report["parser_seconds_on_1_MB"] = parser_seconds()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

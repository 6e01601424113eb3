"""Throughput of the real server at 1, 4 and 16 concurrent clients, without and with batched serving, in one run.

    .venv/bin/python benchmarks/batched_serving.py [--reasoner DIR --device cuda] [--requests 4] [--max-rows 8]

Starts the server twice on the same models: `--conf batch_max_rows 1` (every question its own generate call, as
before batching) and `--conf batch_max_rows N`; each client asks the same slice (its image embedding cached, so the
reasoner's share of the work shows). Prints requests/s, p50 and max latency, the mean number of questions that shared
a generate call, and the ratio of the two servers' throughput. Without `--reasoner` the tiny format-tuned reasoner is
built (a toy: it shows the server's and the batching's own overheads, not a 7B model's decoding).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.server_latency import QUESTIONS, ask  # noqa: E402
from monailabel_app.demo.sample_studies import write_sample_studies  # noqa: E402
from monailabel_app.demo.tiny_models import build_tiny_reasoner  # noqa: E402
from tests.support.monailabel_server import MonaiLabelServer  # noqa: E402

CLIENTS = (1, 4, 16)


def load(server: MonaiLabelServer, clients: int, requests_per_client: int) -> dict:
    def one_client(index: int) -> list[tuple[float, dict]]:
        return [ask(server, "xray_opacity", QUESTIONS[(index + i) % 2]) for i in range(requests_per_client)]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = [a for batch in pool.map(one_client, range(clients)) for a in batch]
    elapsed = time.perf_counter() - started
    walls = [wall for wall, _ in answers]
    return {
        "clients": clients,
        "requests": len(answers),
        "requests_per_s": round(len(answers) / elapsed, 3),
        "p50_s": round(statistics.median(walls), 3),
        "max_s": round(max(walls), 3),
        "mean_batch": round(statistics.mean(result.get("reasoner_batch", 1) for _, result in answers), 2),
    }


def measure(scratch: Path, reasoner: str, device: str, max_rows: int, requests_per_client: int) -> list[dict]:
    conf = {"models": "implicit_query", "reasoner": reasoner, "device": device, "max_new_tokens": "256"}
    conf.update(model_dir=str(scratch / f"model_{max_rows}"), batch_max_rows=str(max_rows), max_pending_requests="64")
    server = MonaiLabelServer(scratch / "studies", conf, scratch / f"server_{max_rows}.log").start()
    try:
        ask(server, "xray_opacity", QUESTIONS[0])  # models load, the slice's embedding is cached
        return [{"batch_max_rows": max_rows, **load(server, clients, requests_per_client)} for clients in CLIENTS]
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reasoner")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-rows", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "batched_serving.json")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="medreasoner-batching-"))
    reasoner = args.reasoner or str(build_tiny_reasoner(scratch / "tiny_reasoner", format_tuned=True))
    write_sample_studies(scratch / "studies")
    before = measure(scratch, reasoner, args.device, 1, args.requests)
    after = measure(scratch, reasoner, args.device, args.max_rows, args.requests)
    print("| clients | requests/s, unbatched | requests/s, batched | ratio | p50 s (un/batched) | mean batch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for one, many in zip(before, after):
        ratio = many["requests_per_s"] / one["requests_per_s"]
        print(
            f"| {one['clients']} | {one['requests_per_s']} | {many['requests_per_s']} | {ratio:.2f} | "
            f"{one['p50_s']} / {many['p50_s']} | {many['mean_batch']} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"reasoner": reasoner, "unbatched": before, "batched": after}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

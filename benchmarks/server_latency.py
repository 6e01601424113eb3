"""Per-stage latency and throughput of one implicit query through the real MONAI Label server, and evaluation speed.

    .venv/bin/python benchmarks/server_latency.py [--reasoner DIR] [--segmenter KIND --segmenter-checkpoint FILE]
        [--segmenter-encoder auto|torch-fp32|...]
        [--device cpu|cuda] [--requests 8] [--out benchmarks/results/server_latency.json]

Without `--reasoner` it builds the tiny format-tuned reasoner (a toy: it shows the pipeline's own overheads and the
segmenter's cost, not a 7B model's). Prints a table and writes JSON. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monailabel_app.data.folder_samples import write_folder_dataset  # noqa: E402
from monailabel_app.demo.sample_studies import write_sample_studies  # noqa: E402
from monailabel_app.demo.tiny_models import build_tiny_reasoner  # noqa: E402
from tests.support.grounding_datasets import lesion_samples  # noqa: E402
from tests.support.monailabel_server import MonaiLabelServer  # noqa: E402

QUESTIONS = ["Which structure explains the dull percussion note?", "Where is the lesion that explains the pain?"]
STAGES = ("reasoner_prefill", "reasoner_decode", "parse", "segmenter_encode", "segmenter_decode", "write_label")


def ask(server: MonaiLabelServer, image_id: str, question: str, slice_index: int = -1) -> tuple[float, dict]:
    params = {"question": question, "slice": slice_index, "result_extension": ".nrrd", "result_dtype": "uint8"}
    started = time.perf_counter()
    response = requests.post(
        f"{server.url}/infer/implicit_query",
        params={"image": image_id, "output": "all"},
        files={"params": (None, json.dumps(params))},
        timeout=600,
    )
    wall = time.perf_counter() - started
    response.raise_for_status()
    body = response.content
    start = body.index(b'{"status"')
    result, _ = json.JSONDecoder().raw_decode(body.decode("utf-8", "replace"), start)
    return wall, result


def stage_row(name: str, wall: float, result: dict) -> dict:
    latencies = result["latencies"]
    row = {"case": name, "wall_s": round(wall, 4), "status": result["status"]}
    row.update({stage: latencies.get(stage, 0.0) for stage in STAGES})
    row["server_overhead_s"] = round(wall - latencies["total"] - latencies.get("write_label", 0.0), 4)
    return row


def throughput(server: MonaiLabelServer, clients: int, requests_per_client: int) -> dict:
    def one_client(index: int) -> list[float]:
        return [ask(server, "xray_opacity", QUESTIONS[(index + i) % 2])[0] for i in range(requests_per_client)]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        walls = [w for ws in pool.map(one_client, range(clients)) for w in ws]
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(walls),
        "requests_per_s": round(len(walls) / elapsed, 3),
        "p50_s": round(statistics.median(walls), 3),
        "max_s": round(max(walls), 3),
    }


def evaluation_speed(reasoner: str, scratch: Path, samples: int) -> dict:
    folder = write_folder_dataset(lesion_samples(samples), scratch / "dataset")
    command = [
        sys.executable,
        "-m",
        "monailabel_app.evaluate",
        "--data",
        str(folder),
        "--output",
        str(scratch / "eval"),
    ]
    command += ["--model", reasoner, "--no-progress", "--overlays", "0", "--max-new-tokens", "120"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    elapsed = time.perf_counter() - started
    return {"samples": samples, "seconds": round(elapsed, 2), "samples_per_s": round(samples / elapsed, 3)}


def print_table(rows: list[dict]) -> None:
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reasoner")
    parser.add_argument("--segmenter", default="litemedsam")
    parser.add_argument("--segmenter-checkpoint")
    parser.add_argument(
        "--segmenter-encoder",
        default="auto",
        help="--conf segmenter_encoder; torch-fp32 keeps a first start's background conversion out of the figures",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--requests", type=int, default=4, help="requests per client in the throughput runs")
    parser.add_argument("--eval-samples", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "server_latency.json")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="medreasoner-bench-"))
    reasoner = args.reasoner or str(build_tiny_reasoner(scratch / "tiny_reasoner", format_tuned=True))
    write_sample_studies(scratch / "studies")
    conf = {"models": "implicit_query", "reasoner": reasoner, "segmenter": args.segmenter, "device": args.device}
    conf.update(model_dir=str(scratch / "model"), max_new_tokens="256", segmenter_encoder=args.segmenter_encoder)
    if args.segmenter_checkpoint:
        conf["segmenter_checkpoint"] = args.segmenter_checkpoint
    server = MonaiLabelServer(scratch / "studies", conf, scratch / "server.log").start()
    try:
        stages = [stage_row("cold (models load)", *ask(server, "ct_chest_lesion", QUESTIONS[0], 6))]
        stages.append(stage_row("warm, new slice", *ask(server, "ct_chest_lesion", QUESTIONS[0], 5)))
        stages.append(
            stage_row("warm, same slice (cached embedding)", *ask(server, "ct_chest_lesion", QUESTIONS[1], 5))
        )
        loads = [throughput(server, clients, args.requests) for clients in (1, 4, 16)]
    finally:
        server.stop()
    evaluation = evaluation_speed(reasoner, scratch, args.eval_samples)
    print_table(stages)
    print_table(loads)
    print_table([evaluation])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"reasoner": reasoner, "segmenter": args.segmenter, "stages": stages, "throughput": loads}
    report["evaluation"] = evaluation
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

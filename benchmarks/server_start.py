"""How fast the server starts: seconds to `/info` for this app and for a bare MONAI Label app (no models) measured in
the same run, and seconds to the first answer, with their differences to the bare start.

    .venv/bin/python benchmarks/server_start.py [--repeats 3] [--label after]

Both servers are `monailabel start_server` on 127.0.0.1 with the same studies; each start is timed from the process's
launch to the first 200 from `/info/` (asked every 0.05 s, both apps), then, for this app, to the answer of a question
sent right then (the models load in the background from the start: the question waits for them). One start of each,
not timed, comes first (files in the page cache, the model folder filled as after a first start: it runs until the
segmenter's CPU encoder, converted in the background, is kept there, as a server that ran a while). Starts alternate
between the two apps; the medians are printed and kept under `--label` in `benchmarks/results/server_start.json`.
The goal (issue 24): `/info` at a bare start's speed, the first answer no later than a bare start plus 3 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monailabel_app.demo.sample_studies import write_sample_studies  # noqa: E402
from monailabel_app.demo.tiny_models import build_tiny_reasoner  # noqa: E402
from monailabel_app.grounding.service import SEGMENTER_ENCODERS_DIR  # noqa: E402
from tests.support.hostile_requests import good_request  # noqa: E402
from tests.support.monailabel_server import MONAILABEL, MonaiLabelServer, free_port  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "server_start.json"
POLL_S = 0.05
FIRST_ANSWER_GOAL_S = 3.0  # after a bare start's /info
BARE_APP = """
from monailabel.interfaces.app import MONAILabelApp


class BareApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="bare", description="no models")
"""


def wait_for_info(url: str, process: subprocess.Popen, started: float, timeout_s: float = 300) -> float:
    while time.perf_counter() - started < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                return time.perf_counter() - started
        except requests.RequestException:
            pass
        time.sleep(POLL_S)
    raise TimeoutError("no /info/ answer")


def bare_start(app_dir: Path, studies: Path) -> float:
    port = free_port()
    command = [str(MONAILABEL), "start_server", "--app", str(app_dir), "--studies", str(studies)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    env = {"PATH": "/usr/bin:/bin", "MONAILABEL_PYEXE": sys.executable, "PYTHONPATH": str(app_dir)}
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=app_dir)
    try:
        return wait_for_info(f"http://127.0.0.1:{port}", process, started)
    finally:
        process.terminate()
        process.wait(30)


def app_start(
    studies: Path, reasoner: Path, scratch: Path, keep_encoder: bool = False
) -> tuple[float, float, Optional[float]]:
    """One model folder for every start, as `scripts/start.sh`'s model/: what a load caches there stays.
    `keep_encoder`: stopped only once the converted segmenter encoder is kept there (else the next start converts).
    Also the load's own seconds, as the server logs them (less stretched by other processes than the start)."""
    conf = {"models": "implicit_query", "reasoner": str(reasoner), "model_dir": str(scratch / "model")}
    server = MonaiLabelServer(studies, conf, scratch / "app.log")
    started = time.perf_counter()
    try:
        server.start(poll_s=POLL_S)
        to_info = time.perf_counter() - started
        assert good_request(requests.Session(), server.url).status_code == 200
        answered = time.perf_counter() - started
        loaded = re.search(r"Models loaded in ([0-9.]+) s", (scratch / "app.log").read_text(errors="replace"))
        if keep_encoder:
            wait_for_kept_encoder(scratch / "model" / SEGMENTER_ENCODERS_DIR, scratch / "app.log")
        return to_info, answered, float(loaded.group(1)) if loaded else None
    finally:
        server.stop()


def wait_for_kept_encoder(folder: Path, log: Path, timeout_s: float = 900) -> None:
    """Until the segmenter's OpenVINO encoder is kept in `folder` (a minute or so on 2 busy cores), or the log says
    it could not be made; at once without openvino (the torch encoder serves, nothing is kept)."""
    if importlib.util.find_spec("openvino") is None:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(folder.glob("*/manifest.json")) or "encoder could not be made" in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"no segmenter encoder kept in {folder} within {timeout_s} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="latest", help="the key this run's figures are kept under in the results")
    parser.add_argument("--reasoner", type=Path, help="a tiny reasoner folder built before (default: built here)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="start-bench-"))
    studies = scratch / "studies"
    write_sample_studies(studies)
    bare = scratch / "bare_app"
    bare.mkdir()
    (bare / "main.py").write_text(BARE_APP)
    reasoner = args.reasoner or build_tiny_reasoner(scratch / "reasoner", seed=0, format_tuned=True)
    bare_start(bare, studies)  # not timed: the files both read in the page cache, the app's model folder filled
    app_start(studies, reasoner, scratch, keep_encoder=True)
    bare_info, app_info, app_answer, load, load_s = [], [], [], [], []
    for _ in range(args.repeats):
        load.append(os.getloadavg()[0])
        bare_info.append(bare_start(bare, studies))
        info, answer, loaded = app_start(studies, reasoner, scratch)
        app_info.append(info)
        app_answer.append(answer)
        load_s.append(loaded)
    bare_s, info_s, answer_s = (statistics.median(v) for v in (bare_info, app_info, app_answer))
    report = {
        "repeats": args.repeats,
        "bare_monailabel_to_info_s": round(bare_s, 2),
        "this_app_to_info_s": round(info_s, 2),
        "this_app_to_first_answer_s": round(answer_s, 2),
        "info_over_bare_s": round(info_s - bare_s, 2),
        "info_ratio_to_bare": round(info_s / bare_s, 2),
        "first_answer_over_bare_s": round(answer_s - bare_s, 2),
        "first_answer_goal_met": answer_s <= bare_s + FIRST_ANSWER_GOAL_S,
        # the load and the answer, the app's own part (the time to /info varies most with other processes)
        "first_answer_after_info_s": round(statistics.median(a - i for a, i in zip(app_answer, app_info)), 2),
        "models_loaded_in_s": load_s,  # the server's log: reasoner and segmenter, from the start of the load
        "load_average_1min": [round(v, 1) for v in load],  # a busy machine stretches every figure
        "all": {
            "bare": [round(v, 2) for v in bare_info],
            "app": [round(v, 2) for v in app_info],
            "answer": [round(v, 2) for v in app_answer],
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if "repeats" in kept:  # the earlier format: one run, no label
        kept = {"earlier": kept}
    kept[args.label] = report
    RESULTS.write_text(json.dumps(kept, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

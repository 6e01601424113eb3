"""A retraining dies with the server that started it, on the real server (`monailabel_app/training/run_owner.py`).

A server killed with SIGKILL used to leave its run going, out of reach: the restarted server started a second run
over it, and an orphan published a model with no server running. Here the server is killed (SIGKILL) in the middle
of a run, and at the last moment of a run's publish; its run's processes must be gone by themselves, nothing must be
published, and the restarted server must say the run stopped and train again. The publish moment is made long enough
to hit with `MEDREASONER_TEST_PUBLISH_PAUSE_S` (a pause read only by tests, `model_store.PUBLISH_PAUSE_ENV`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from safetensors.numpy import load_file

from lib.datastore.local import GatedLocalDatastore
from monailabel_app.demo.sample_studies import XRAY_LESION, write_png, xray_picture
from monailabel_app.reasoning.model_store import PUBLISH_PAUSE_ENV, publish_reasoner
from monailabel_app.training.run_owner import RECORD_FILE, ProcessIdentity, read_record
from tests.support.monailabel_server import MonaiLabelServer
from tests.support.training_runs import wait_for_training
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.server, pytest.mark.slow]

QUESTION = "Which finding would explain this patient's pleuritic chest pain?"
TRAIN_OPTIONS = {"max_steps": 2, "group_size": 4, "prompts_per_step": 2, "max_new_tokens": 120}
# a toy reasoner retrained on two labels need not improve: publish all the same (the decision is tested elsewhere)
TRAIN_OPTIONS.update(learning_rate=0.001, temperature=1.0, force_publish=True)
LONG_RUN = {**TRAIN_OPTIONS, "max_steps": 500, "epochs": 500}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Two X-rays with a final label each (saved as the server saves them), so a run has something to learn."""
    folder = tmp_path_factory.mktemp("studies")
    store = GatedLocalDatastore(str(folder), keep_versions=2, extensions=["*.png"])
    mask = XRAY_LESION.mask(*xray_picture().shape).astype(np.uint8)
    for seed in (1, 2):
        write_png(xray_picture(seed=seed), folder / f"xray_{seed}.png")
        store.refresh()
        label = write_png(mask, tmp_path_factory.mktemp("label") / f"xray_{seed}.png")
        store.save_label(f"xray_{seed}", str(label), "final", {"question": QUESTION})
    return folder


@pytest.fixture
def run_records():
    """The records of the runs a test started: whatever of them still runs at the end is killed, so a failed test
    leaves no training going on the machine."""
    records: list[dict] = []
    yield records
    for record in records:
        for pid in group_members(record["group"]):
            os.kill(pid, signal.SIGKILL)


def start_server(studies, model_dir, reasoner_dir, log_dir, env=()) -> MonaiLabelServer:
    conf = {"models": "implicit_query", "reasoner": str(reasoner_dir), "max_new_tokens": "160"}
    conf.update(model_dir=str(model_dir))
    log = log_dir / f"server-{time.monotonic_ns()}.log"
    server = MonaiLabelServer(studies, conf, log, env=dict(env)).start()
    server.model_dir = Path(model_dir)
    return server


def kill_server(server: MonaiLabelServer) -> None:
    """SIGKILL, as a crash or an out-of-memory kill ends it: no clean-up of its own runs."""
    server.process.kill()
    server.process.wait()
    server.stop()


def group_members(group: int) -> list[int]:
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == group and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return members


def run_processes_gone(record: dict) -> bool:
    process = ProcessIdentity.from_dict(record["process"])
    return not process.is_alive() and not group_members(record["group"])


def train_stats(server) -> dict:
    return requests.get(f"{server.url}/info/", timeout=30).json()["train_stats"]["implicit_query"]


def unfinished_runs(model_dir: Path) -> list:
    runs = model_dir / "train_runs"

    def finished(run):
        return (run / "result.json").is_file() and '"completed"' in (run / "result.json").read_text()

    return [run.name for run in runs.iterdir() if not finished(run)] if runs.is_dir() else []


def whole_reasoner(link: Path) -> dict:
    """The published reasoner's weights; fails unless the link resolves to a complete folder."""
    assert link.is_symlink() and (link / "config.json").is_file()
    return load_file(str(link / "model.safetensors"))


def test_a_server_killed_mid_run_takes_its_run_along_and_a_restart_trains_again(
    studies, format_tuned_reasoner_dir, tmp_path, run_records
):
    model_dir = tmp_path / "model"
    server = start_server(studies, model_dir, format_tuned_reasoner_dir, tmp_path)
    try:
        assert requests.post(f"{server.url}/train/implicit_query", json=LONG_RUN, timeout=60).status_code == 200
        wait_until(lambda: (model_dir / RECORD_FILE).is_file(), 300, "the run holds the model folder", server)
        record = read_record(model_dir)
        run_records.append(record)
        progress = model_dir / "train_runs" / record["run"] / "progress.json"
        wait_until(progress.is_file, 300, "the run's first GRPO step", server)  # mid-way: training, not yet done
        assert record["group"] == record["process"]["pid"]  # the run leads its process group
    finally:
        kill_server(server)

    wait_until(lambda: run_processes_gone(record), 60, "the run's processes end with their server")
    assert not (model_dir / "reasoner").exists() and not list((model_dir / "reasoner_versions").glob("*"))

    server = start_server(studies, model_dir, format_tuned_reasoner_dir, tmp_path)
    try:
        stats = train_stats(server)
        assert stats["run"] == record["run"] and stats["status"] == "stopped"
        assert stats["stopped_because"] == "the server restarted"
        assert unfinished_runs(model_dir) == [] and not (model_dir / RECORD_FILE).exists()

        # a living run this server did not start (another server's, on the same model folder) holds the folder: 429
        holder = hold_model_folder(model_dir)
        try:
            busy = requests.post(f"{server.url}/train/implicit_query", json=TRAIN_OPTIONS, timeout=60)
            assert busy.status_code == 429 and f"pid {holder.pid}" in busy.text, busy.text
        finally:
            holder.kill()
            holder.wait()

        started = requests.post(f"{server.url}/train/implicit_query", json=TRAIN_OPTIONS, timeout=60)
        assert started.status_code == 200, started.text
        task = wait_for_training(server)
        assert task["status"] == "DONE", "\n".join(task.get("details", []))
        stats = train_stats(server)
        assert stats["status"] == "completed" and stats["run"] != record["run"]
        assert os.readlink(model_dir / "reasoner") == os.path.join("reasoner_versions", stats["run"])
        whole_reasoner(model_dir / "reasoner")
    finally:
        server.stop()


def hold_model_folder(model_dir: Path) -> subprocess.Popen:
    """A run of another server (this test process stands for it): it holds the model folder until killed."""
    code = (
        "import sys, time\n"
        "from monailabel_app.training.run_owner import ProcessIdentity, claim_run\n"
        f"run = claim_run({str(model_dir)!r}, ProcessIdentity.of({os.getpid()}), watch=False)\n"
        "print('holding', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_server_killed_while_its_run_publishes_keeps_the_old_reasoner_whole(
    studies, format_tuned_reasoner_dir, tmp_path, run_records
):
    model_dir = tmp_path / "model"
    publish_reasoner(shutil.copytree(format_tuned_reasoner_dir, tmp_path / "old"), model_dir, "old")
    old_weights = whole_reasoner(model_dir / "reasoner")
    server = start_server(studies, model_dir, format_tuned_reasoner_dir, tmp_path, env={PUBLISH_PAUSE_ENV: "60"})
    try:
        assert requests.post(f"{server.url}/train/implicit_query", json=TRAIN_OPTIONS, timeout=60).status_code == 200
        new_link = model_dir / ".reasoner.new"
        wait_until(new_link.is_symlink, 500, "the run's publish reaches its last moment", server)
        record = read_record(model_dir)
        run_records.append(record)
        assert (model_dir / "reasoner_versions" / record["run"] / "config.json").is_file()  # moved in, not published
    finally:
        kill_server(server)

    wait_until(lambda: run_processes_gone(record), 60, "the run's processes end with their server")
    assert os.readlink(model_dir / "reasoner") == os.path.join("reasoner_versions", "old")
    assert whole_reasoner(model_dir / "reasoner").keys() == old_weights.keys()

    server = start_server(studies, model_dir, format_tuned_reasoner_dir, tmp_path)
    try:
        stats = train_stats(server)
        assert stats["run"] == record["run"] and stats["status"] == "stopped" and not stats.get("published")
        assert sorted(p.name for p in (model_dir / "reasoner_versions").iterdir()) == ["old"]  # the unpublished goes
        link = model_dir / "reasoner"
        assert os.readlink(link) == os.path.join("reasoner_versions", "old")
        after = whole_reasoner(link)
        assert all(np.array_equal(old_weights[name], after[name]) for name in old_weights)
        reasoner = requests.get(f"{server.url}/info/", timeout=30).json()["reasoners"]["implicit_query"]
        assert reasoner["version"] == "old" and reasoner["source"] == "published"
        running = requests.get(f"{server.url}/train/", params={"check_if_running": "true"}, timeout=30)
        assert running.status_code == 404 and not (model_dir / RECORD_FILE).exists()
        assert run_processes_gone(record)  # and no later publish: nothing of that run is left to do it
    finally:
        server.stop()

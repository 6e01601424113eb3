"""One owner of a retraining run (`monailabel_app/training/run_owner.py`), with real processes: a run holds its model
folder's lock for its whole life, dies with the server that started it (its rank processes too), publishes nothing
once that server is gone, and a restarted server ends what its predecessor left. A `sleep` process stands in for the
server; the run is a Python process that claims the run as the train task does, and starts a `sleep` as its rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monailabel_app.reasoning.model_store import PublishWithdrawnError, publish_reasoner
from monailabel_app.training.run_owner import (
    RECORD_FILE,
    ProcessIdentity,
    RunAbandonedError,
    RunBusyError,
    claim_run,
    read_record,
    recover_after_restart,
    server_holds_lock,
)
from monailabel_app.training.run_records import RESULT_FILE, RUNS_DIR, last_training_stats, write_training_stats
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def held_by_a_run(model_dir: Path) -> str | None:
    """What the server is told while a run holds the model folder (its RunBusyError, naming the run), else None."""
    try:
        with server_holds_lock(model_dir, timeout_s=1):
            return None
    except RunBusyError as busy:
        return str(busy)


# The run: claims the model folder for the server given (watching it, or not: a run whose watch did not act, as a
# restarted server may find one), starts a rank-like child in its process group, prints that child's pid, waits.
RUN = """
import os, subprocess, sys, time
from monailabel_app.training.run_owner import ProcessIdentity, claim_run
model_dir, server_pid, watch = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "watch"
if not watch:
    os.setpgid(0, 0)
run = claim_run(model_dir, ProcessIdentity.of(server_pid), watch=watch)
rank = subprocess.Popen(["sleep", "600"])
print(rank.pid, flush=True)
time.sleep(600)
"""


@pytest.fixture
def stand_in_server():
    server = subprocess.Popen(["sleep", "600"])
    yield server
    server.kill()
    server.wait()


@pytest.fixture
def started_runs():
    runs: list[subprocess.Popen] = []
    yield runs
    for run in runs:
        run.kill()
        run.wait()


def start_run(model_dir: Path, server: subprocess.Popen, started_runs: list, watch: bool):
    """The run's process and its rank's identity, once the run holds the model folder."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    mode = "watch" if watch else "no-watch"
    run = subprocess.Popen(
        [sys.executable, "-c", RUN, str(model_dir), str(server.pid), mode], stdout=subprocess.PIPE, text=True, env=env
    )
    started_runs.append(run)
    rank = ProcessIdentity.of(int(run.stdout.readline()))
    assert read_record(model_dir)["process"]["pid"] == run.pid
    return run, rank


def kill_stand_in(server: subprocess.Popen) -> None:
    server.kill()
    server.wait()


def trained_folder(root: Path, name: str, weights: str) -> Path:
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_text(weights)
    return folder


def test_one_run_holds_the_model_folder_and_only_it_writes_the_stats(tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    with claim_run(model_dir, watch=False) as run:
        assert run.holds and held_by_a_run(model_dir) and f"pid {os.getpid()}" in held_by_a_run(model_dir)
        with pytest.raises(RunBusyError):
            claim_run(model_dir, watch=False, timeout_s=0.5)
        with pytest.raises(RunBusyError):  # the server may not write the stats under a living run
            with server_holds_lock(model_dir, timeout_s=0.5):
                pass
        monkeypatch.setenv("LOCAL_RANK", "1")  # a rank process Lightning started: it follows, holds nothing
        rank = claim_run(model_dir)
        assert rank.run_name == run.run_name and not rank.holds and not rank.may_publish()
        rank.write_stats({"status": "failed"})
        monkeypatch.delenv("LOCAL_RANK")
        run.write_stats({"status": "running", "run": run.run_name})
    assert held_by_a_run(model_dir) is None and not (model_dir / RECORD_FILE).exists()
    run.write_stats({"status": "failed"})  # a late write from a run that let go: ignored
    assert last_training_stats(model_dir) == {"status": "running", "run": run.run_name}
    with server_holds_lock(model_dir, timeout_s=0.5):
        pass


def test_a_run_dies_with_its_server_and_its_ranks_with_it(tmp_path, stand_in_server, started_runs):
    model_dir = tmp_path / "model"
    run, rank = start_run(model_dir, stand_in_server, started_runs, watch=True)
    assert held_by_a_run(model_dir) is not None
    kill_stand_in(stand_in_server)
    run.wait(timeout=30)  # the run saw its server gone and killed its own process group
    wait_until(lambda: not rank.is_alive(), what="the rank process is gone")
    assert run.returncode == -9
    assert held_by_a_run(model_dir) is None


def test_a_run_does_not_start_for_a_server_that_is_gone(tmp_path, stand_in_server):
    server = ProcessIdentity.of(stand_in_server.pid)
    kill_stand_in(stand_in_server)
    with pytest.raises(RunAbandonedError):
        claim_run(tmp_path / "model", server, watch=False)
    assert held_by_a_run(tmp_path / "model") is None


def test_nothing_is_published_once_the_server_that_asked_is_gone(tmp_path, stand_in_server):
    model_dir = tmp_path / "model"
    publish_reasoner(trained_folder(tmp_path, "old", "w-old"), model_dir, "old")
    with claim_run(model_dir, ProcessIdentity.of(stand_in_server.pid), watch=False) as run:
        assert run.may_publish()
        kill_stand_in(stand_in_server)
        trained = trained_folder(tmp_path, "new", "w-new")
        with pytest.raises(PublishWithdrawnError):
            publish_reasoner(trained, model_dir, run.run_name, may_publish=run.may_publish)
    assert os.readlink(model_dir / "reasoner") == os.path.join("reasoner_versions", "old")
    assert (model_dir / "reasoner" / "model.safetensors").read_text() == "w-old"
    assert (trained / "model.safetensors").read_text() == "w-new"  # put back where it was
    assert sorted(p.name for p in (model_dir / "reasoner_versions").iterdir()) == ["old"]
    assert not (model_dir / ".reasoner.new").exists()


def test_a_restarted_server_kills_a_run_its_predecessor_left_and_records_it_stopped(
    tmp_path, stand_in_server, started_runs
):
    model_dir = tmp_path / "model"
    publish_reasoner(trained_folder(tmp_path, "old", "w-old"), model_dir, "old")
    run, rank = start_run(model_dir, stand_in_server, started_runs, watch=False)
    name = read_record(model_dir)["run"]
    write_training_stats(model_dir, {"run": name, "status": "running"})  # as the run writes it (it holds the lock)
    (model_dir / RUNS_DIR / name / "checkpoints").mkdir(parents=True)
    (model_dir / "reasoner_versions" / name).mkdir()  # moved in, link not swapped yet
    (model_dir / RUNS_DIR / "20200101-000000").mkdir()
    (model_dir / RUNS_DIR / "20200101-000000" / RESULT_FILE).write_text(json.dumps({"status": "completed"}))

    assert recover_after_restart(model_dir) is None  # its server still runs: another server's run, left alone
    assert run.poll() is None and rank.is_alive()

    kill_stand_in(stand_in_server)
    done = recover_after_restart(model_dir)
    assert done and "killed run" in done
    run.wait(timeout=30)
    wait_until(lambda: not rank.is_alive(), what="the rank process is gone")
    stats = last_training_stats(model_dir)
    assert stats["status"] == "stopped" and stats["stopped_because"] == "the server restarted"
    assert sorted(p.name for p in (model_dir / RUNS_DIR).iterdir()) == ["20200101-000000"]  # completed runs stay
    assert sorted(p.name for p in (model_dir / "reasoner_versions").iterdir()) == ["old"]
    assert os.readlink(model_dir / "reasoner") == os.path.join("reasoner_versions", "old")
    assert not (model_dir / RECORD_FILE).exists() and held_by_a_run(model_dir) is None


def test_a_run_that_published_just_before_its_server_went_is_recorded_as_completed(tmp_path):
    model_dir = tmp_path / "model"
    publish_reasoner(trained_folder(tmp_path, "new", "w-new"), model_dir, "20260101-120000")
    write_training_stats(model_dir, {"run": "20260101-120000", "status": "running"})
    dead = {"pid": 2**22 + 1, "started": 1.0}
    (model_dir / RECORD_FILE).write_text(json.dumps({"run": "20260101-120000", "process": dead, "server": dead}))
    assert recover_after_restart(model_dir)
    stats = last_training_stats(model_dir)
    assert stats["status"] == "completed" and stats["note"] == "the server restarted"
    assert (model_dir / "reasoner" / "model.safetensors").read_text() == "w-new"
    assert recover_after_restart(model_dir) is None  # nothing left to do


def test_a_restart_after_a_finished_run_leaves_every_version_alone(tmp_path):
    model_dir = tmp_path / "model"
    publish_reasoner(trained_folder(tmp_path, "old", "w-old"), model_dir, "old")
    publish_reasoner(trained_folder(tmp_path, "new", "w-new"), model_dir, "20260101-120000")
    write_training_stats(model_dir, {"run": "20260101-120000", "status": "completed"})
    os.replace(model_dir / "reasoner", model_dir / "kept")  # an admin rolled the link back by hand
    os.symlink(os.path.join("reasoner_versions", "old"), model_dir / "reasoner")
    assert recover_after_restart(model_dir) is None
    assert sorted(p.name for p in (model_dir / "reasoner_versions").iterdir()) == ["20260101-120000", "old"]

"""Active learning end to end on the real server: ask, save final labels, retrain with GRPO, serve the new reasoner.

Labels are saved as Slicer does (`PUT /datastore/label?tag=final` with the label file); one carries its question in
the save request's params, the other gets it from the question asked before saving (the app records it). The server
retrains by itself after two new final labels (`--conf auto_retrain_after 2`).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from safetensors.numpy import load_file

from monailabel_app.demo.sample_studies import XRAY_LESION, write_png, xray_picture
from monailabel_app.reasoning.identity import weights_digest
from tests.support.monailabel_server import MonaiLabelServer
from tests.support.training_runs import wait_for_training

pytestmark = pytest.mark.server

QUESTION = "Which finding would explain this patient's pleuritic chest pain?"
# Sampled at temperature 1, the tiny format-tuned reasoner's answers differ now and then within a group, so rewards
# (and gradients) do too; a random-weight reasoner would score 0 everywhere and learn nothing.
TRAIN_OPTIONS = {"max_steps": 2, "group_size": 4, "prompts_per_step": 2, "max_new_tokens": 120}
# a toy reasoner retrained on two labels need not improve: publish all the same (the decision is tested elsewhere)
TRAIN_OPTIONS.update(learning_rate=0.001, temperature=1.0, force_publish=True)


@pytest.fixture(scope="module")
def studies_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("studies")


@pytest.fixture(scope="module")
def server(format_tuned_reasoner_dir, studies_dir, tmp_path_factory):
    studies = studies_dir
    for seed in (1, 2):
        write_png(xray_picture(seed=seed), studies / f"xray_{seed}.png")
    model_dir = tmp_path_factory.mktemp("model")
    conf = {"models": "implicit_query", "reasoner": str(format_tuned_reasoner_dir), "max_new_tokens": "160"}
    conf.update(model_dir=str(model_dir), auto_retrain_after="2")
    conf.update({f"train_{key}": str(value) for key, value in TRAIN_OPTIONS.items()})  # the site's defaults
    running = MonaiLabelServer(studies, conf, tmp_path_factory.mktemp("logs") / "server.log").start()
    running.model_dir = model_dir
    yield running
    running.stop()


def save_final_label(server, image_id, tmp_path, params):
    mask = XRAY_LESION.mask(*xray_picture().shape).astype(np.uint8)
    path = write_png(mask, tmp_path / f"{image_id}_label.png")
    with open(path, "rb") as label:
        response = requests.put(
            f"{server.url}/datastore/label",
            params={"image": image_id, "tag": "final"},
            files={"label": (path.name, label), "params": (None, json.dumps(params))},
            timeout=60,
        )
    assert response.status_code == 200, response.text


def infer(server, image_id):
    response = requests.post(
        f"{server.url}/infer/implicit_query",
        params={"image": image_id, "output": "json"},
        files={"params": (None, json.dumps({"question": QUESTION}))},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return response.json()


def wait_until_running(server, timeout_s=120) -> None:
    """MONAI Label counts a run as busy once its subprocess exists, a moment after the request is accepted."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if requests.get(f"{server.url}/train/", params={"check_if_running": "true"}, timeout=30).status_code == 200:
            return
        time.sleep(0.2)
    raise TimeoutError("training never started")


def published_weights(server) -> dict:
    return load_file(str(server.model_dir / "reasoner" / "model.safetensors"))


def test_retrain_from_saved_labels_publishes_and_serves_the_new_reasoner(server, format_tuned_reasoner_dir, tmp_path):
    assert infer(server, "xray_1")["reasoner"] == str(format_tuned_reasoner_dir)
    save_final_label(server, "xray_1", tmp_path, {})  # its question comes from the infer above
    save_final_label(server, "xray_2", tmp_path, {"question": "Where is the opacity that explains the cough?"})
    info = requests.get(f"{server.url}/datastore/label/info", params={"label": "xray_1", "tag": "final"}, timeout=30)
    assert info.json()["question"] == QUESTION

    wait_until_running(server)  # the second saved label started it
    busy = requests.post(f"{server.url}/train/implicit_query", json=TRAIN_OPTIONS, timeout=60)
    assert busy.status_code == 429 and "already running" in busy.text
    task = wait_for_training(server)
    assert task["status"] == "DONE", "\n".join(task.get("details", []))

    stats = requests.get(f"{server.url}/info/", timeout=30).json()["train_stats"]["implicit_query"]
    assert (
        stats["status"] == "completed" and stats["final_labels"] == stats["samples"] == 2 and stats["steps_done"] >= 1
    )
    link = server.model_dir / "reasoner"
    assert link.is_symlink() and (link / "config.json").is_file()
    assert stats["held_out"] == 0 and stats["publish_check"]["status"] == "skipped"  # 2 labels: too few to hold out
    assert "needs at least 30" in stats["publish_check"]["reason"]
    assert stats["ended_by"].startswith("max_steps: 2 steps done")  # said, not left to guess
    rose = stats["greedy_reward_after"] > stats["greedy_reward_before"]
    assert stats["publish_decision"].startswith("published: " if rose else "published because force_publish")
    assert stats["mean_reward_first"] > 0  # the groups' rewards were real figures, not all zero
    # the tuned toy answers in format, so its greedy reward is its fixed answer's score against these labels: > 0
    assert 0 < stats["greedy_reward_before"] <= 4 and 0 <= stats["greedy_reward_after"] <= 4
    before = load_file(str(format_tuned_reasoner_dir / "model.safetensors"))
    after = published_weights(server)
    assert before.keys() == after.keys()
    assert any(not np.array_equal(before[name], after[name]) for name in before)

    result = infer(server, "xray_2")  # the next request, no restart
    assert result["reasoner"] == str(link) and result["status"] in ("ok", "no_grounding")
    version = result["reasoner_version"]
    assert version["source"] == "published" and version["version"] == stats["run"]
    assert version["sha256"] == weights_digest(link) and len(version["sha256"]) == 64
    assert (
        requests.get(f"{server.url}/info/", timeout=30).json()["reasoners"]["implicit_query"]["sha256"]
        == version["sha256"]
    )


def test_bad_train_options_are_refused_before_a_run_starts(server):
    bad = [
        {**TRAIN_OPTIONS, "temperature": 0},  # GRPO needs sampled answers
        {**TRAIN_OPTIONS, "group_size": 10_000},
        {**TRAIN_OPTIONS, "max_steps": 2.5},
        {"max_stepz": 3},
        {"bundle_path": "/tmp"},  # MONAI Label would add it to the training subprocess's PYTHONPATH
    ]
    for options in bad:
        response = requests.post(f"{server.url}/train/implicit_query", json=options, timeout=60)
        assert response.status_code == 422, (options, response.text)
    run_sync = requests.post(f"{server.url}/train/implicit_query", params={"run_sync": "true"}, json={}, timeout=60)
    assert run_sync.status_code == 422
    assert requests.get(f"{server.url}/train/", params={"check_if_running": "true"}, timeout=30).status_code == 404


def unfinished_runs(server) -> list:
    runs = server.model_dir / "train_runs"

    def finished(run):
        return (run / "result.json").is_file() and '"completed"' in (run / "result.json").read_text()

    return [run.name for run in runs.iterdir() if not finished(run)] if runs.is_dir() else []


def test_simultaneous_starts_run_once_and_a_stopped_run_says_so(server):
    long_run = {**TRAIN_OPTIONS, "max_steps": 500, "epochs": 500}
    paths = ["/train/", "/train/implicit_query"] * 3  # MONAI Label's "run all" route and the model's own
    with ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(lambda path: requests.post(f"{server.url}{path}", json=long_run, timeout=60), paths))
    assert sorted(a.status_code for a in answers) == [200] + [429] * (len(paths) - 1), [a.text for a in answers]
    wait_until_running(server)
    time.sleep(15)  # into the run: its process has written its folder and stats
    assert requests.delete(f"{server.url}/train/", timeout=60).status_code == 200
    assert wait_for_training(server)["status"] in ("STOPPED", "ERROR", "DONE")
    every = requests.get(f"{server.url}/train/", params={"all": "true"}, timeout=30).json()
    assert not any(task["status"] in ("SUBMITTED", "RUNNING") for task in every)  # nothing was queued behind it
    stats = requests.get(f"{server.url}/info/", timeout=30).json()["train_stats"]["implicit_query"]
    assert stats["status"] == "stopped" and unfinished_runs(server) == []


def test_a_run_that_fails_publishes_nothing(server, studies_dir):
    link = server.model_dir / "reasoner"
    published_before = os.readlink(link) if link.is_symlink() else None
    for label in (studies_dir / "labels" / "final").glob("*.png"):
        label.write_bytes(b"not a png any more")  # damaged on disk after it was saved: no usable sample is left
    response = requests.post(f"{server.url}/train/implicit_query", json=TRAIN_OPTIONS, timeout=60)
    assert response.status_code == 200, response.text
    task = wait_for_training(server)
    assert task["status"] == "ERROR" and any("No usable training samples" in line for line in task.get("details", []))
    assert (os.readlink(link) if link.is_symlink() else None) == published_before
    assert unfinished_runs(server) == []
    assert requests.get(f"{server.url}/info/", timeout=30).json()["train_stats"]["implicit_query"]["status"] == "failed"

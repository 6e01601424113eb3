"""The training entry points: progress, stop, crash-safe resume, failure reports, the exported model, the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from monailabel_app.data.umrg_parquet import UmrgParquet, write_umrg_parquet
from monailabel_app.reasoning.transformers_reasoner import ReasonerUnavailableError, TransformersReasoner
from monailabel_app.training.cli import main
from monailabel_app.training.control import TrainingControl
from monailabel_app.training.run import train_reasoner
from tests.support.grpo_toys import answer_opens_a_tag, tiny_config, toy_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


class PromptRecorder:
    """The toy reward, noting which sample (by its ground truth box) each scored answer belonged to; it raises on
    call number `crash_on_call` to simulate a crash mid-run."""

    def __init__(self, crash_on_call: int | None = None) -> None:
        self.samples_seen: list[int] = []
        self.calls = 0
        self.crash_on_call = crash_on_call

    def __call__(self, text: str, ground_truth: dict) -> dict:
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise RuntimeError("simulated crash")
        self.samples_seen.append(round(ground_truth["bbox_2d"][0] / 2) - 10)  # 56 px images are seen at 112 px
        return answer_opens_a_tag(text, ground_truth)


def test_stopped_and_crashed_runs_resume_exactly_where_an_uninterrupted_run_would_be(tiny_reasoner_dir, tmp_path):
    """3 steps over 2 data epochs of 2 steps, each scoring 2 prompts x 2 answers. The interrupted run is stopped after
    step 1, resumed, crashes in step 3, and is resumed from the periodic checkpoint: it sees the same prompts."""
    config = tiny_config(group_size=2, max_steps=3, epochs=2, save_every_steps=1)
    samples = toy_samples(5)  # 2 steps of 2 prompts per data epoch (the fifth is dropped)
    uninterrupted, progress = PromptRecorder(), []
    result = train_reasoner(
        samples, config, tiny_reasoner_dir, tmp_path / "whole", reward_fn=uninterrupted, on_progress=progress.append
    )
    assert result["status"] == "completed" and result["steps_done"] == 3
    assert [p["steps_done"] for p in progress] == [1, 2, 3] and progress[-1]["total_steps"] == 3
    assert json.loads((tmp_path / "whole" / "progress.json").read_text())["steps_done"] == 3

    run, stop_file, interrupted = tmp_path / "interrupted", tmp_path / "stop", PromptRecorder(crash_on_call=9)
    stop_file.touch()
    stopped = train_reasoner(samples, config, tiny_reasoner_dir, run, reward_fn=interrupted, stop_file=stop_file)
    assert (stopped["status"], stopped["steps_done"]) == ("stopped", 1)
    assert json.loads((run / "result.json").read_text())["status"] == "stopped"
    assert (run / "reasoner" / "config.json").exists()  # the model trained so far is kept
    stop_file.unlink()
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_reasoner(samples, config, tiny_reasoner_dir, run, reward_fn=interrupted, resume=True)
    assert json.loads((run / "result.json").read_text())["status"] == "failed"
    resumed = train_reasoner(samples, config, tiny_reasoner_dir, run, reward_fn=interrupted, resume=True)
    assert resumed["status"] == "completed" and resumed["steps_done"] == 3 and len(resumed["reward_curve"]) == 1
    assert resumed["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    assert interrupted.samples_seen == uninterrupted.samples_seen
    with pytest.raises(ValueError, match="prompts_per_step"):
        other_batches = config.replace(prompts_per_step=4, mini_batch_prompts=4)
        train_reasoner(samples, other_batches, tiny_reasoner_dir, run, resume=True)


def test_a_stop_event_is_a_stop_request():
    event = threading.Event()
    control = TrainingControl(total_steps=3, stop_event=event)
    assert not control.stop_requested()
    event.set()
    assert control.stop_requested()


def test_a_failure_raises_and_is_written_down(tmp_path):
    with pytest.raises(ReasonerUnavailableError):
        train_reasoner(toy_samples(2), tiny_config(), tmp_path / "no_such_model", tmp_path / "run")
    failure = json.loads((tmp_path / "run" / "result.json").read_text())
    assert failure["status"] == "failed" and "no_such_model" in failure["error"]


def test_the_trained_reasoner_loads_for_inference(tiny_reasoner_dir, tmp_path):
    config = tiny_config(max_steps=1)
    result = train_reasoner(toy_samples(2), config, tiny_reasoner_dir, tmp_path, reward_fn=answer_opens_a_tag)
    reasoner = TransformersReasoner(result["model_dir"], device="cpu", max_new_tokens=4)
    output = reasoner.generate(toy_samples(1)[0].image, "Where is the lesion?")
    assert output.new_tokens >= 1 and output.frame.model_width == 112
    assert (Path(result["model_dir"]) / "tiny_model.json").exists()  # still flagged as a toy


def test_command_line_trains_lazily_from_parquet_and_says_what_is_wrong(tiny_reasoner_dir, tmp_path, capsys):
    data = write_umrg_parquet(toy_samples(3), tmp_path / "train.parquet", row_group_rows=2)
    config_file = tiny_config().save(tmp_path / "tiny.yaml")
    common = ["--config", str(config_file), "--data", str(data), "--set", "max_steps=1", "--set", "lr=2e-4"]
    assert main([*common, "--model", str(tiny_reasoner_dir), "--output", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "result.json").read_text())["steps_done"] == 1
    assert "lr: 0.0002" in (tmp_path / "run" / "grpo_config.yaml").read_text()

    assert main([*common, "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "bad")]) == 2
    assert json.loads((tmp_path / "bad" / "result.json").read_text())["status"] == "failed"
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("error: Reasoner model") and "--model " in last_line
    assert (
        main(
            [
                "--config",
                "hospital",
                "--set",
                "group_size=1",
                "--data",
                str(data),
                "--model",
                "x",
                "--output",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    assert "group_size must be at least 2" in capsys.readouterr().err


def test_a_parquet_is_read_one_sample_at_a_time(tmp_path):
    from monailabel_app.data.load_report import LoadReport

    data = write_umrg_parquet(toy_samples(5), tmp_path / "train.parquet", row_group_rows=2)
    report = LoadReport()
    rows = UmrgParquet(data).usable(report)
    assert len(rows) == 5 and not isinstance(rows, list)
    assert rows[3].sample_id == toy_samples(5)[3].sample_id and np.array_equal(rows[3].image, toy_samples(5)[3].image)

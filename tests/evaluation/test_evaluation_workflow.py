"""The researcher's sequence, through the real commands: data in one command (synthetic set, a site's questions file,
a MONAI Label datastore), two evaluations, their comparison; one writer per output folder, repeated ids removed and
counted, an honest tally after a resume, and the report's parts (intervals, distributions, overlays chosen by score,
the paper's figures only where comparable, a self-contained HTML)."""

from __future__ import annotations

import csv
import html
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monailabel_app.core.statistics import paired_test
from monailabel_app.data.convert import main as convert_main
from monailabel_app.data.loaders import load_samples
from monailabel_app.demo.sample_dataset import SIMULATED_MODELS, write_sample_dataset
from monailabel_app.evaluation.cli import main as evaluate_main
from monailabel_app.evaluation.compare_report import COMPARE_HTML, COMPARE_JSON, COMPARE_MD
from monailabel_app.evaluation.output_lock import output_lock
from monailabel_app.evaluation.overlays import OVERLAY_DIR
from monailabel_app.evaluation.paper_reference import comparability
from monailabel_app.evaluation.report import HTML_FILE, REPORT_FILE, report_blocks
from monailabel_app.evaluation.report_document import render_markdown
from monailabel_app.evaluation.run_folder import RESULTS_FILE

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    return write_sample_dataset(tmp_path_factory.mktemp("sample"), pictures=4, questions_per_picture=3, seed=7)


def evaluate(data: Path, answers: Path, output: Path, *extra: str) -> dict:
    arguments = ["--data", str(data), "--backend", "answers", "--answers", str(answers), "--segmenter", "none"]
    return evaluate_main([*arguments, "--output", str(output), "--no-progress", *extra])


@pytest.fixture(scope="module")
def two_runs(dataset, tmp_path_factory) -> tuple[Path, Path]:
    runs = tmp_path_factory.mktemp("runs")
    for model in SIMULATED_MODELS:
        evaluate(dataset["parquet"], dataset[f"answers-{model}"], runs / model)
    return runs / "careful", runs / "hasty"


def html_text(text: str) -> str:
    return html.escape(text)


def result_lines(folder: Path) -> list[dict]:
    return [json.loads(text) for text in (folder / RESULTS_FILE).read_text().splitlines()]


def test_the_sample_data_command_writes_both_forms_and_two_simulated_models(dataset, tmp_path):
    command = [sys.executable, "-m", "monailabel_app.demo.sample_dataset", str(tmp_path), "--pictures", "2"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 6 samples" in done.stdout and (tmp_path / "synthetic.parquet").is_file()
    from_parquet, from_folder = list(load_samples(dataset["parquet"])), list(load_samples(dataset["folder"]))
    assert len(from_parquet) == 12 and [s.sample_id for s in from_parquet] == [s.sample_id for s in from_folder]
    assert [s.ground_truth for s in from_parquet] == [s.ground_truth for s in from_folder]
    assert len({s.modality for s in from_parquet}) == 4 and all(s.mask.any() for s in from_parquet)


def test_the_careful_model_beats_the_hasty_one_and_the_comparison_says_so(two_runs, tmp_path):
    careful, hasty = two_runs
    compared = evaluate_main(["compare", str(careful), str(hasty), "--output", str(tmp_path)])
    assert compared["paired"] == 12 and compared["only_a"] == compared["only_b"] == 0
    lines_a, lines_b = result_lines(careful), result_lines(hasty)
    expected = paired_test([x["metrics"]["iou"] for x in lines_a], [x["metrics"]["iou"] for x in lines_b])
    assert compared["tests"]["iou"] == pytest.approx(expected.to_json())
    assert compared["tests"]["iou"]["mean_difference"] < 0 and compared["settings_changed"].keys() == {"answers"}
    for groups in compared["groups"].values():
        entries = groups.values()
        assert sum(e["iou"]["wins"] + e["iou"]["losses"] + e["iou"]["ties"] for e in entries) == 12
    changes = [abs(change["difference"]) for change in compared["most_changed"]]
    assert changes == sorted(changes, reverse=True) and changes[0] > 0
    assert json.loads((tmp_path / COMPARE_JSON).read_text()) == compared
    markdown = (tmp_path / COMPARE_MD).read_text()
    assert "| IoU | 12 |" in markdown and "## Samples that changed most" in markdown
    iou_row = next(row for row in markdown.splitlines() if row.startswith("| IoU |"))
    assert f"| {compared['tests']['iou']['wilcoxon_p']:.3g} |" in iou_row  # Wilcoxon's p is exact, never floored
    assert "data:image/png;base64," in (tmp_path / COMPARE_HTML).read_text()


def test_a_run_compared_with_itself_is_all_ties(two_runs, tmp_path):
    careful, _ = two_runs
    compared = evaluate_main(["compare", str(careful), str(careful), "--output", str(tmp_path)])
    for test in compared["tests"].values():
        assert test["ties"] == 12 and test["wilcoxon_p"] == 1.0 and test["bootstrap_p"] == 1.0
    assert compared["most_changed"] == [] and "no clear difference" in (tmp_path / COMPARE_MD).read_text()
    with pytest.raises(SystemExit, match="folder of its own"):
        evaluate_main(["compare", str(careful), str(careful), "--output", str(careful)])
    with pytest.raises(SystemExit, match="no evaluation results"):
        evaluate_main(["compare", str(careful), str(tmp_path), "--output", str(tmp_path / "x")])


def test_the_report_has_intervals_distributions_failures_and_chosen_overlays(two_runs):
    hasty = two_runs[1]
    metrics = json.loads((hasty / "metrics.json").read_text())
    lines = result_lines(hasty)
    for entry in metrics["supercategory"].values():
        low, high = entry["ci95"]["iou"]
        assert low <= entry["iou"] <= high
    iou = np.array([line["metrics"]["iou"] for line in lines]) * 100
    assert metrics["distributions"]["iou"]["quantiles"]["p50"] == pytest.approx(np.median(iou))
    failed = sum(line["status"] != "ok" for line in lines)
    assert (
        metrics["failure_rate"] == pytest.approx(failed / len(lines))
        and sum(metrics["failure_reasons"].values()) == failed
    )
    drawn = {path.name.split("_", 1)[0]: path.name.split("_", 1)[1][:-4] for path in (hasty / OVERLAY_DIR).iterdir()}
    by_id = {line["id"]: line["metrics"]["iou"] for line in lines}
    assert by_id[drawn["worst-1"]] == min(by_id.values()) and by_id[drawn["best-1"]] == max(by_id.values())
    report = (hasty / REPORT_FILE).read_text()
    assert "runs from 0 to 200" in report and "## Distribution per sample" in report and "## Latency" in report
    page = (hasty / HTML_FILE).read_text()
    best = next(line for line in lines if line["id"] == drawn["best-1"])
    assert page.count("data:image/png;base64,") >= 5 and 'src="http' not in page
    assert "worst #1" in page and html_text(best["question"]) in page


def test_the_report_names_its_run_and_says_when_the_answers_are_simulated(two_runs):
    """The title names the run (its folder) and whose answers, never a server path; simulated answers are flagged."""
    hasty = two_runs[1]
    report = (hasty / REPORT_FILE).read_text()
    title = report.splitlines()[0]
    assert title == "# Evaluation hasty: answers from answers-hasty.jsonl" and "/" not in title
    assert "WARNING: these answers are simulated" in report
    assert "<title>Evaluation hasty: answers from answers-hasty.jsonl</title>" in (hasty / HTML_FILE).read_text()


def test_the_papers_figures_are_shown_only_for_a_comparable_run():
    run = {"data": "/data/U-MRG-14K/test.parquet", "source": "data", "parser": "paper", "think": True}
    base = {"samples": 2215, "failed": 0, "failure_rate": 0.0, "failure_reasons": {}, "loading": "", "intervals": ""}
    base |= {"overall": {"count": 2215, "iou": 30.0, "pdice": 20.0, "dice_joint": 35.0}}
    base |= {key: {} for key in ("supercategory", "modality", "category")}
    base["metric_names"] = ["iou", "pdice", "dice_joint"]
    paper_run = {**base, "run": {**run, "segmenter": "medsam2"}}
    assert comparability(paper_run) == {"iou": [], "pdice": [], "dice_joint": []}
    text = render_markdown(report_blocks(paper_run, charts=False))
    assert "| MedReasoner-7B | 32.42 | 26.55 | 37.78 |" in text and "| this run | 30.00 | 20.00 | 35.00 |" in text
    lite = render_markdown(report_blocks({**base, "run": {**run, "segmenter": "litemedsam"}}, charts=False))
    assert "| MedReasoner-7B | 32.42 | 26.55 |" in lite and "Dice (joint): not shown, because segmenter" in lite
    subset = comparability({**paper_run, "samples": 300, "run": {**paper_run["run"], "limit": 300}})
    assert all(subset.values()) and "subset" in " ".join(subset["iou"])
    other = comparability({**paper_run, "run": {**paper_run["run"], "parser": "app", "data": "/site/labels.parquet"}})
    assert len(other["iou"]) == 2


def test_a_folder_another_run_is_writing_is_refused_until_it_ends(dataset, tmp_path):
    holder = (
        "import sys, time\n"
        "from monailabel_app.evaluation.output_lock import output_lock\n"
        "with output_lock(sys.argv[1]):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(120)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit, match=f"another run \\(pid {process.pid}"):
            evaluate(dataset["parquet"], dataset["answers-careful"], tmp_path)
        assert not (tmp_path / RESULTS_FILE).exists()
        with pytest.raises(SystemExit, match="another run"):
            evaluate_main(["compare", str(dataset["folder"]), str(dataset["folder"]), "--output", str(tmp_path)])
    finally:
        process.kill()
        process.wait()
    assert evaluate(dataset["parquet"], dataset["answers-careful"], tmp_path)["samples"] == 12  # freed by the kill
    with output_lock(tmp_path), output_lock(tmp_path):  # re-entrant within one thread
        pass


def test_repeated_ids_are_removed_and_counted_and_a_resume_tallies_only_new_work(dataset, tmp_path):
    index_path = Path(dataset["folder"]) / "index.json"
    records = json.loads(index_path.read_text())
    repeated = tmp_path / "data"
    repeated.mkdir()
    for name in ("images", "masks"):
        (repeated / name).symlink_to(Path(dataset["folder"]) / name)
    (repeated / "index.json").write_text(json.dumps(records + records[:3]))
    output = tmp_path / "run"
    first = evaluate(repeated, dataset["answers-careful"], output, "--limit", "5")
    assert first["session"]["scored"] == 5 and first["session"]["already_scored"] == 0
    later = evaluate(repeated, dataset["answers-careful"], output, "--limit", "100")
    assert later["samples"] == 12 and later["session"] | {"seconds": 0, "samples_per_s": 0} == {
        "scored": 7,
        "already_scored": 5,
        "seconds": 0,
        "samples_per_s": 0,
        "repeated_ids_removed": 3,
        "skipped_at_loading": 0,
    }
    assert len({line["id"] for line in result_lines(output)}) == len(result_lines(output)) == 12
    assert "This session scored 7 samples" in (output / REPORT_FILE).read_text()
    with open(output / RESULTS_FILE, "a") as results:  # two writers' leftovers: a line for an id already there
        results.write(json.dumps(result_lines(output)[0]) + "\n")
    resumed = evaluate(repeated, dataset["answers-careful"], output, "--limit", "100")
    assert resumed["samples"] == 12 and resumed["session"]["scored"] == 0 and len(result_lines(output)) == 12
    narrower = evaluate(repeated, dataset["answers-careful"], output, "--limit", "4")  # the report covers 4, not 12
    assert narrower["samples"] == 4 and narrower["session"]["already_scored"] == 4
    assert [line["id"] for line in result_lines(output)][:4] == [record["id"] for record in records[:4]]


def test_a_sites_questions_file_and_a_datastores_labels_become_a_umrg_parquet(dataset, tmp_path):
    folder = Path(dataset["folder"])
    records = json.loads((folder / "index.json").read_text())
    questions = folder / "questions.csv"
    with open(questions, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "mask", "question", "modality", "supercategory", "id"])
        writer.writeheader()
        for record in records[:4]:
            writer.writerow({key: record.get(key, "") for key in writer.fieldnames})
        writer.writerow({"image": "images/missing.png", "mask": "masks/missing.png", "question": "Where?", "id": "x"})
    converted = convert_main(["--questions", str(questions), "--output", str(tmp_path / "site.parquet")])
    samples = list(load_samples(converted))
    originals = {s.sample_id: s for s in load_samples(folder)}
    assert [s.sample_id for s in samples] == [record["id"] for record in records[:4]]
    for sample in samples:
        assert sample.ground_truth == originals[sample.sample_id].ground_truth
        assert np.array_equal(sample.mask, originals[sample.sample_id].mask) and sample.category == "unknown"
    with pytest.raises(SystemExit):
        convert_main(["--questions", str(questions), "--output", str(converted)])  # never overwrites

    from monailabel.datastore.local import LocalDatastore

    studies = tmp_path / "studies"
    studies.mkdir()
    datastore = LocalDatastore(str(studies), extensions=("*.png",))
    for sample in samples[:2]:
        Image.fromarray(sample.image).save(studies / f"{sample.sample_id}.png")
    datastore = LocalDatastore(str(studies), extensions=("*.png",))
    for sample in samples[:2]:
        label = tmp_path / f"{sample.sample_id}-label.png"
        Image.fromarray(sample.mask.astype(np.uint8)).save(label)
        datastore.save_label(sample.sample_id, str(label), "final", {"question": sample.question, "modality": "CT"})
    from_labels = list(
        load_samples(convert_main(["--datastore", str(studies), "--output", str(tmp_path / "l.parquet")]))
    )
    assert sorted(s.question for s in from_labels) == sorted(s.question for s in samples[:2])
    assert {s.modality for s in from_labels} == {"CT"}
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "index.json").write_text(json.dumps([{"image": "nope.png", "question": "q?", "mask": "nope.png"}]))
    with pytest.raises(SystemExit):
        convert_main(["--questions", str(empty), "--output", str(tmp_path / "none.parquet")])
    assert not (tmp_path / "none.parquet").exists()


def test_the_documented_sequence_runs_offline_from_a_shell(tmp_path):
    """The four commands of docs/evaluation.md, as a newcomer types them (subprocesses, this checkout's interpreter)."""
    steps = [
        ["-m", "monailabel_app.demo.sample_dataset", "data", "--pictures", "3"],
        [
            "-m",
            "monailabel_app.evaluate",
            "--data",
            "data/synthetic.parquet",
            "--backend",
            "answers",
            "--answers",
            "data/answers-careful.jsonl",
            "--segmenter",
            "none",
            "--output",
            "runs/careful",
        ],
        [
            "-m",
            "monailabel_app.evaluate",
            "--data",
            "data/synthetic.parquet",
            "--backend",
            "answers",
            "--answers",
            "data/answers-hasty.jsonl",
            "--segmenter",
            "none",
            "--output",
            "runs/hasty",
        ],
        ["-m", "monailabel_app.evaluate", "compare", "runs/careful", "runs/hasty", "--output", "runs/careful-vs-hasty"],
    ]
    environment = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    for step in steps:
        done = subprocess.run([sys.executable, *step], cwd=tmp_path, env=environment, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert "Wilcoxon p=" in done.stderr and (tmp_path / "runs/careful-vs-hasty" / COMPARE_HTML).is_file()


def write_run(folder: Path, lines: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / RESULTS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def result_line(sample_id: str, metrics: dict, status: str = "ok", answer_error=None) -> dict:
    return {"id": sample_id, "status": status, "metrics": metrics, "answer_error": answer_error, "supercategory": "T"}


def test_compare_ranks_by_a_metric_both_runs_have_and_leaves_out_failed_requests(tmp_path):
    with_dice = [result_line(f"s{n}", {"iou": 0.1 * n, "pdice": 0.0, "dice_joint": 0.9}) for n in range(6)]
    without_dice = [result_line(f"s{n}", {"iou": 0.1 * n + (0.3 if n == 2 else 0), "pdice": 0.0}) for n in range(5)]
    without_dice.append(result_line("s5", {"iou": 0.0, "pdice": 0.0}, "no_grounding", "endpoint timed out"))
    a, b = write_run(tmp_path / "a", with_dice), write_run(tmp_path / "b", without_dice)
    compared = evaluate_main(["compare", str(a), str(b), "--output", str(tmp_path / "ab")])
    assert compared["metric_names"] == ["iou", "pdice"] and compared["ranking_metric"] == "iou"
    assert compared["paired"] == 5 and compared["unanswered"] == 1  # s5's request failed in B: not the model's fault
    assert [change["id"] for change in compared["most_changed"]] == ["s2"]
    assert "1 samples whose answer could not be had" in (tmp_path / "ab" / COMPARE_MD).read_text()


def test_a_dollar_sign_in_a_question_or_reasoning_never_costs_the_report(dataset, tmp_path):
    """Matplotlib reads "$...$" as TeX; a model's text is no TeX."""
    samples = list(load_samples(dataset["parquet"]))
    answers = tmp_path / "answers.jsonl"
    text = '<think>costs $_$ and $\\frac{a}$</think><answer>{"bbox": [1, 1, 40, 40], "points_1": [5, 5], "points_2": [9, 9]}</answer>'
    answers.write_text("".join(json.dumps({"id": s.sample_id, "output": text}) + "\n" for s in samples))
    metrics = evaluate(dataset["parquet"], answers, tmp_path / "run", "--overlays", "1")
    assert metrics["samples"] == 12 and len(list((tmp_path / "run" / OVERLAY_DIR).iterdir())) == 3
    assert "$\\frac{a}$" in (tmp_path / "run" / HTML_FILE).read_text()


def test_a_csv_questions_file_may_give_the_box_and_points_instead_of_a_mask(dataset, tmp_path):
    sample = next(iter(load_samples(dataset["folder"])))
    questions = tmp_path / "questions.csv"
    Image.fromarray(sample.image).save(tmp_path / "picture.png")
    truth = sample.ground_truth
    with open(questions, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "question", "bbox_2d", "point_2d"])
        writer.writerow(
            ["q1", "picture.png", sample.question, json.dumps(truth["bbox_2d"]), json.dumps(truth["point_2d"])]
        )
    converted = list(
        load_samples(convert_main(["--questions", str(questions), "--output", str(tmp_path / "q.parquet")]))
    )
    assert len(converted) == 1 and converted[0].ground_truth == truth and converted[0].mask is None

"""What an evaluation run writes besides `results.jsonl`: metrics.json, report.md and report.html (the same report;
the HTML is one self-contained file), and the charts.

The report gives the paper's means with 95% bootstrap intervals (overall, per super-category, modality and category),
the distribution of per-sample values, the failure rate and its reasons, latency percentiles, the worst, median and
best samples drawn with their question and reasoning, and the paper's figures only where the run is comparable.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from monailabel_app.evaluation.figures import METRIC_LABELS, distribution_histograms, group_bars
from monailabel_app.evaluation.metrics import positives
from monailabel_app.evaluation.overlays import OVERLAY_DIR, ChosenOverlay, ranking_metric
from monailabel_app.evaluation.paper_reference import PAPER_FIGURES, comparability
from monailabel_app.evaluation.report_document import (
    Block,
    Bullets,
    Heading,
    Paragraph,
    Picture,
    Pictures,
    Table,
    render_html,
    render_markdown,
)
from monailabel_app.evaluation.summary import build_metrics, metric_values
from monailabel_app.reasoning.identity import TINY_MODEL_MARKER

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
HTML_FILE = "report.html"
CHART_FILES = {"supercategory": "supercategory.png", "modality": "modality.png"}
DISTRIBUTION_FILE = "distributions.png"
REPORT_FILES = (METRICS_FILE, REPORT_FILE, HTML_FILE, *CHART_FILES.values(), DISTRIBUTION_FILE)
GROUP_TITLES = {"supercategory": "Super-category", "category": "Category", "modality": "Modality"}
DISTRIBUTION_METRICS = ("iou", "pdice", "dice_joint")
PDICE_NOTE = (
    "pDice is the paper's point score: 2·I/U of the two circles around the predicted and the true key points, not a "
    "Dice of masks, so one sample's value runs from 0 to 200 (x100) rather than to 100, and a mean above 100 is "
    "possible. It is kept unclipped to match the published evaluation."
)
LATENCY_LABELS = {
    "reasoner_s": "reasoner (prefill + decode), s",
    "prefill_s": "prefill, s",
    "decode_s": "decode, s",
    "segment_s": "segmenter (three prompts), s",
    "new_tokens": "new tokens",
}


def write_reports(
    output_dir: Path,
    lines: Sequence[Mapping[str, Any]],
    run: Mapping[str, Any],
    loading: str,
    session: Optional[Mapping[str, Any]] = None,
    overlays: Sequence[ChosenOverlay] = (),
) -> dict:
    """Writes metrics.json, the charts, report.md and report.html; returns what metrics.json holds."""
    output_dir = Path(output_dir)
    metrics = {**build_metrics(lines, run, loading, session or {}), "name": output_dir.name}
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    charts = bool(lines)
    if charts:
        for key, name in CHART_FILES.items():
            group_bars(output_dir / name, f"Per {GROUP_TITLES[key].lower()}", metrics[key], metrics["metric_names"])
        shown = [name for name in DISTRIBUTION_METRICS if name in metrics["metric_names"]]
        scored = [x["metrics"] for x in positives(lines)]
        per_sample = {name: [100 * v for v in metric_values(scored, name)] for name in shown}
        distribution_histograms(output_dir / DISTRIBUTION_FILE, per_sample)
    blocks = report_blocks(metrics, overlays, charts)
    (output_dir / REPORT_FILE).write_text(render_markdown(blocks), encoding="utf-8")
    (output_dir / HTML_FILE).write_text(render_html(blocks, _title(metrics), output_dir), encoding="utf-8")
    return metrics


def _title(metrics: Mapping[str, Any]) -> str:
    """The run's name (its output folder) and whose answers were scored, never a server's absolute path."""
    run = metrics["run"]
    if run.get("backend") == "answers" and run.get("answers"):
        who = f"answers from {Path(str(run['answers'])).name}"
    else:
        model = str(run.get("model") or run.get("backend"))
        who = Path(model).name if Path(model).is_absolute() else model
    return f"Evaluation {metrics['name']}: {who}" if metrics.get("name") else f"Evaluation: {who}"


def _not_a_real_model(run: Mapping[str, Any]) -> Optional[str]:
    """A warning when the scored answers are simulated (the sample data set's) or come from a tiny test reasoner
    (the offline demo's): such figures say nothing about any model."""
    if run.get("backend") == "answers" and run.get("answers") and Path(str(run["answers"])).is_file():
        with open(str(run["answers"]), encoding="utf-8", errors="replace") as stream:
            first = [line for _, line in zip(range(20), stream)]
        models = set()
        for line in first:
            try:
                models.add(str(json.loads(line).get("model") or ""))
            except (ValueError, AttributeError):
                continue
        if any(model.startswith("simulated") for model in models):
            return (
                "WARNING: these answers are simulated (made from the ground truth with noise, "
                "monailabel_app.demo.sample_dataset): the figures below say nothing about any model."
            )
    model = run.get("model")
    if model and (Path(str(model)) / TINY_MODEL_MARKER).is_file():
        return (
            "WARNING: the reasoner is a tiny model built in code (the offline demo's or a test's): its answers, and "
            "the figures below, mean nothing."
        )
    return None


def report_blocks(
    metrics: Mapping[str, Any], overlays: Sequence[ChosenOverlay] = (), charts: bool = True
) -> list[Block]:
    run, names = metrics["run"], metrics["metric_names"]
    blocks: list[Block] = [Heading(_title(metrics), 1)]
    warning = _not_a_real_model(run)
    if warning:
        blocks.append(Paragraph(warning))
    blocks.append(Bullets(_run_facts(metrics)))
    blocks += [Paragraph(f"Means are x100 over every sample; a failed sample counts as 0. {metrics['intervals']}.")]
    blocks += [Heading("Overall"), _overall_table(metrics["overall"], names), Paragraph(PDICE_NOTE)]
    blocks += _failure_blocks(metrics)
    blocks += _abstention_blocks(metrics)
    blocks += _distribution_blocks(metrics, charts)
    for key in ("supercategory", "modality", "category"):
        blocks += [Heading(f"Per {GROUP_TITLES[key].lower()}"), _group_table(GROUP_TITLES[key], metrics[key], names)]
        if charts and key in CHART_FILES:
            blocks.append(Picture(CHART_FILES[key], f"Per {GROUP_TITLES[key].lower()}"))
    blocks += _latency_blocks(metrics.get("latency", {}))
    blocks += _overlay_blocks(overlays, metrics)
    blocks += _paper_blocks(metrics)
    return blocks


def _run_facts(metrics: Mapping[str, Any]) -> list[str]:
    run = metrics["run"]
    facts = [
        f"Data: `{run.get('data')}`: {metrics['samples']} samples scored ({metrics['loading']})",
        f"Answers: {_answers_line(run)}",
        f"Parser: `{run.get('parser')}`; segmenter: `{run.get('segmenter')}`; think: {_yes_no(run.get('think'))}",
    ]
    if run.get("limit") is not None:
        facts.append(f"Only the first {run['limit']} samples of the data (`--limit`)")
    session = metrics.get("session") or {}
    if session:
        rate = f", {session['samples_per_s']:.2f} samples/s" if session.get("samples_per_s") else ""
        facts.append(
            f"This session scored {session.get('scored', 0)} samples in {session.get('seconds', 0):.1f} s{rate}; "
            f"{session.get('already_scored', 0)} were scored by an earlier session of this run"
        )
    return facts


def _yes_no(flag: Any) -> str:
    return "unknown" if flag is None else ("yes" if flag else "no")


def _answers_line(run: Mapping[str, Any]) -> str:
    if run.get("backend") == "answers":
        return f"from the file `{run.get('answers')}`"
    where = f" at {run['base_url']}" if run.get("base_url") else ""
    return f"`{run.get('backend')}` backend{where}, model `{run.get('model')}`; {_sampling_text(run.get('sampling'))}"


def _sampling_text(sampling: Optional[Mapping[str, Any]]) -> str:
    if not sampling:
        return "decoding unknown"
    if sampling.get("temperature") == 0:
        text = f"greedy decoding, at most {sampling.get('max_new_tokens')} new tokens"
    else:
        text = f"sampling at temperature {sampling.get('temperature')}, top_p {sampling.get('top_p')}, "
        text += f"at most {sampling.get('max_new_tokens')} new tokens, seed {sampling.get('seed')}"
    penalty = sampling.get("repetition_penalty")
    return text + (f", repetition penalty {penalty}" if penalty else ", the checkpoint's repetition penalty")


def _interval_text(entry: Mapping[str, Any], name: str, count_key: str = "count") -> str:
    interval = (entry.get("ci95") or {}).get(name)
    if interval is None or entry.get(count_key, entry.get("count", 0)) < 2:
        return "n too small"
    return f"{interval[0]:.1f} – {interval[1]:.1f}"


def _count_for(name: str) -> str:
    return "dice_count" if name.startswith("dice_") else "count"


def _overall_table(entry: Mapping[str, Any], names: Sequence[str]) -> Table:
    rows = [
        [
            METRIC_LABELS[name],
            f"{entry[name]:.2f}",
            _interval_text(entry, name, _count_for(name)),
            str(entry.get(_count_for(name), entry["count"])),
        ]
        for name in names
    ]
    return Table(["Metric", "Mean", "95% interval", "n"], rows)


def _group_table(title: str, entries: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> Table:
    rows = []
    for label, entry in entries.items():
        cells = [str(label), str(entry["count"])]
        for name in names:
            if name not in entry:
                cells.append("")
                continue
            interval = _interval_text(entry, name, _count_for(name))
            cells.append(f"{entry[name]:.2f} ({interval})" if interval != "n too small" else f"{entry[name]:.2f}")
        rows.append(cells)
    return Table([title, "n", *(f"{METRIC_LABELS[name]} (95% interval)" for name in names)], rows)


def _abstention_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    """The false-positive rate on negatives and the abstention rate on positives, where the run has either."""
    rates = metrics.get("abstention") or {}
    if not rates.get("negatives") and not rates.get("abstention_rate_on_positives"):
        return []
    lines = [
        f'Positives: {rates["positives"]}; answered "not in this image": {rates["abstention_rate_on_positives"]}%.'
    ]
    if rates.get("negatives"):
        lines.append(
            f'Negatives (saved "no finding"): {rates["negatives"]}; a box drawn anyway (false positive): '
            f'{rates["false_positive_rate"]}%; "not in this image": {rates["abstained_on_negatives"]}%.'
        )
    return [Heading("Not in this image"), Bullets(lines)]


def _failure_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    failed, total = metrics["failed"], metrics["samples"]
    share = f" ({100 * metrics['failure_rate']:.1f}%)" if total else ""
    blocks: list[Block] = [
        Heading("Failures"),
        Paragraph(f"{failed} of {total} answers{share} gave no usable box and points; each counts as 0 in every mean."),
    ]
    if metrics["failure_reasons"]:
        rows = [
            [reason, str(count), f"{100 * count / total:.1f}%"] for reason, count in metrics["failure_reasons"].items()
        ]
        blocks.append(Table(["Reason", "Samples", "Share of all"], rows))
    return blocks


def _distribution_blocks(metrics: Mapping[str, Any], charts: bool) -> list[Block]:
    distributions = metrics.get("distributions") or {}
    if not distributions:
        return []
    rows = []
    for name, entry in distributions.items():
        points = entry["quantiles"]
        rows.append(
            [
                METRIC_LABELS[name],
                *(f"{points[key]:.1f}" for key in ("p10", "p25", "p50", "p75", "p90")),
                f"{entry['mean']:.2f}",
                f"{100 * entry['zero_share']:.1f}%",
            ]
        )
    blocks: list[Block] = [
        Heading("Distribution per sample"),
        Paragraph("Quantiles of the per-sample values (x100): a mean can hide many zeros and a few good answers."),
        Table(["Metric", "10%", "25%", "median", "75%", "90%", "mean", "samples at 0"], rows),
    ]
    if charts:
        blocks.append(Picture(DISTRIBUTION_FILE, "Per-sample values"))
    return blocks


def _latency_blocks(latency: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = [Heading("Latency")]
    if not latency:
        return blocks + [Paragraph("No timings were recorded (an answers file without timings).")]
    rows = []
    for key, label in LATENCY_LABELS.items():
        if key in latency:
            entry = latency[key]
            digits = 0 if key == "new_tokens" else 3
            rows.append([label, *(f"{entry[p]:.{digits}f}" for p in ("p50", "p90", "p99", "max")), str(entry["count"])])
    return blocks + [Table(["Per sample", "p50", "p90", "p99", "max", "n"], rows)]


def _overlay_blocks(overlays: Sequence[ChosenOverlay], metrics: Mapping[str, Any]) -> list[Block]:
    drawn = [item for item in overlays if item.path]
    if not drawn:
        return []
    metric = METRIC_LABELS[ranking_metric([item.line for item in drawn])]
    blocks: list[Block] = [
        Heading("Worst, median and best samples"),
        Paragraph(
            f"Ranked by {metric}. Green: ground truth (mask, box, points); red: the prediction (joint-prompt mask, "
            f"box, points). Under each picture: the question and the model's reasoning. Files in `{OVERLAY_DIR}/`."
        ),
    ]
    for kind in ("worst", "median", "best"):
        pictures = [Picture(item.path, _overlay_caption(item)) for item in drawn if item.kind == kind]
        if pictures:
            blocks += [Heading(kind.capitalize(), 3), Pictures(pictures)]
    return blocks


def _overlay_caption(item: ChosenOverlay) -> str:
    line = item.line
    reasoning = textwrap.shorten(str(line.get("think") or "(none)"), 300, placeholder=" ...")
    return f"{item.kind} #{item.rank}: {line['id']}. Question: {line.get('question')} Reasoning: {reasoning}"


def _paper_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    reasons = comparability(metrics)
    blocks: list[Block] = [
        Heading("The paper's figures"),
        Paragraph(
            "Published with MedSAM2 as segmenter and the joint prompt on U-MRG-14K's test split. A figure is shown "
            "only where this run is measured the same way: IoU and pDice depend on the reasoner, the split and the "
            "frame; Dice also on the segmenter. The split is recognised by its file name (`test.parquet`) and size "
            "(at least 2,000 samples) only: check the file is U-MRG-14K's before citing the comparison."
        ),
    ]
    comparable = [name for name, why in reasons.items() if not why and name in metrics["metric_names"]]
    if comparable:
        header = ["Model", *(METRIC_LABELS[name] for name in comparable)]
        rows = [[model, *(f"{figures[name]:.2f}" for name in comparable)] for model, figures in PAPER_FIGURES.items()]
        rows.append(["this run", *(f"{metrics['overall'][name]:.2f}" for name in comparable)])
        blocks.append(Table(header, rows))
    missing = {name: why for name, why in reasons.items() if why}
    if missing:
        blocks.append(
            Bullets([f"{METRIC_LABELS[name]}: not shown, because {'; '.join(why)}" for name, why in missing.items()])
        )
    return blocks

"""What an evaluation run writes besides `results.jsonl`: metrics.json, report.md, the per-super-category bar chart,
and overlay pictures (ground truth vs prediction, box and points) for the first samples.

Totals are computed from the result lines alone, so a resumed run, or one re-scored from an answers file, reports
exactly what its lines say. Means are x100 and a failed sample counts as 0 in every one of them (the paper's rule).
Dice is averaged over the samples that have a ground-truth mask (all of them for U-MRG and datastore labels).
Matplotlib is driven through its object API with the Agg canvas: no global backend switch, no display needed.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from monailabel_app.data.sample import GroundingSample
from monailabel_app.evaluation.metrics import GROUP_KEYS, PROMPT_SETTINGS, aggregate
from monailabel_app.evaluation.scoring import ScoredSample
from monailabel_app.grounding.pipeline import STATUS_OK

BOX_POINT_METRICS = ("iou", "pdice")
DICE_METRICS = tuple(f"dice_{setting}" for setting in PROMPT_SETTINGS)
METRIC_LABELS = {
    "iou": "IoU",
    "pdice": "pDice",
    "dice_points": "Dice (points)",
    "dice_box": "Dice (box)",
    "dice_joint": "Dice (joint)",
}
GROUP_TITLES = {"supercategory": "Super-category", "category": "Category", "modality": "Modality"}
CHART_METRICS = ("iou", "pdice", "dice_joint")
NO_ANSWER = "no answer from the model (request failed or answer missing)"
# docs/method.md §7: MedSAM2 as segmenter, joint prompt; IoU / pDice / Dice.
PAPER_REFERENCE = {
    "MedReasoner-7B": (32.42, 26.55, 37.78),
    "Qwen2.5-VL-72B": (18.32, 12.39, 29.71),
    "Lingshu-7B (before RL)": (8.19, 3.73, 16.48),
}

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
CHART_FILE = "supercategory.png"
OVERLAY_DIR = "overlays"


def summarise(lines: Sequence[Mapping[str, Any]]) -> dict:
    """{"overall": {...}, "supercategory": {label: {...}}, "category": ..., "modality": ...} of means x100 and counts;
    Dice entries (and "dice_count") where some sample had a ground-truth mask."""
    records = [{**line["metrics"], **{key: line.get(key) for key in GROUP_KEYS}} for line in lines]
    summary = aggregate(records, BOX_POINT_METRICS)
    with_dice = [record for record in records if "dice_joint" in record]
    if with_dice:
        dice = aggregate(with_dice, DICE_METRICS)
        _add_dice(summary["overall"], dice["overall"])
        for key in GROUP_KEYS:
            for label, entry in dice[key].items():
                _add_dice(summary[key][label], entry)
    return summary


def _add_dice(entry: dict, dice_entry: Mapping[str, Any]) -> None:
    entry.update({name: dice_entry[name] for name in DICE_METRICS}, dice_count=dice_entry["count"])


def failure_reasons(lines: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many samples failed for each kind of reason (the reason text up to its first colon)."""
    kinds = Counter(
        NO_ANSWER if line.get("answer_error") else str(line.get("reason") or "unknown").split(":")[0][:120]
        for line in lines
        if line["status"] != STATUS_OK
    )
    return dict(kinds.most_common())


def write_reports(output_dir: Path, lines: Sequence[Mapping[str, Any]], run: Mapping[str, Any], loading: str) -> dict:
    """Writes metrics.json, report.md and the bar chart; returns what metrics.json holds."""
    output_dir = Path(output_dir)
    summary = summarise(lines)
    grounded = sum(line["status"] == STATUS_OK for line in lines)
    metric_names = [name for name in (*BOX_POINT_METRICS, *DICE_METRICS) if name in summary["overall"]]
    metrics = {
        "run": dict(run),
        "loading": loading,
        "samples": len(lines),
        "grounded": grounded,
        "failed": len(lines) - grounded,
        "failure_reasons": failure_reasons(lines),
        "scale": "means x100; a failed sample counts as 0 in every mean",
        "metric_names": metric_names,
        **summary,
    }
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    if lines:
        write_chart(output_dir / CHART_FILE, summary["supercategory"], metric_names)
    (output_dir / REPORT_FILE).write_text(markdown_report(metrics, chart=bool(lines)), encoding="utf-8")
    return metrics


def markdown_report(metrics: Mapping[str, Any], chart: bool = True) -> str:
    run, names = metrics["run"], metrics["metric_names"]
    failed, total = metrics["failed"], metrics["samples"]
    share = f" ({100 * failed / total:.1f}%)" if total else ""
    out = [
        f"# Evaluation: {run.get('model') or run.get('answers') or run.get('backend')}",
        "",
        f"- Data: `{run.get('data')}`: {total} samples scored ({metrics['loading']})",
        f"- Answers: {_answers_line(run)}",
        f"- Parser: `{run.get('parser')}`; segmenter: `{run.get('segmenter')}`; think: {_yes_no(run.get('think'))}",
        f"- Failures (no usable box and points; each counts as 0 in every mean): {failed} of {total}{share}",
    ]
    out += [f"  - {reason}: {count}" for reason, count in metrics["failure_reasons"].items()]
    out += ["", "All values are means x100 over every sample.", "", "## Overall", ""]
    out += _table(None, {"all": metrics["overall"]}, names)
    for key in GROUP_KEYS:
        out += ["", f"## Per {GROUP_TITLES[key].lower()}", ""]
        out += _table(GROUP_TITLES[key], metrics[key], names)
        if key == "supercategory" and chart:
            out += ["", f"![Per super-category]({CHART_FILE})"]
    out += ["", "## Paper reference (MedSAM2 segmenter, joint prompt; IoU / pDice / Dice)", ""]
    out += [f"- {model}: {iou} / {pdice} / {dice}" for model, (iou, pdice, dice) in PAPER_REFERENCE.items()]
    out += ["", f"Overlays of the first samples (green: ground truth, red: prediction) are in `{OVERLAY_DIR}/`.", ""]
    return "\n".join(out)


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


def _table(title: Optional[str], entries: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    show_dice_count = any(entry.get("dice_count", entry["count"]) != entry["count"] for entry in entries.values())
    header = ([title] if title else []) + ["n"] + (["n (Dice)"] if show_dice_count else [])
    header += [METRIC_LABELS[name] for name in names]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, entry in entries.items():
        cells = ([_cell_text(label)] if title else []) + [str(entry["count"])]
        cells += [str(entry.get("dice_count", 0))] if show_dice_count else []
        cells += [f"{entry[name]:.2f}" if name in entry else "" for name in names]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _cell_text(text: str) -> str:
    return str(text).replace("|", "\\|")


def write_chart(path: Path, per_supercategory: Mapping[str, Mapping[str, Any]], metric_names: Sequence[str]) -> None:
    """Horizontal grouped bars: one group per super-category, one bar per headline metric (x100)."""
    shown = [name for name in CHART_METRICS if name in metric_names]
    labels = list(per_supercategory)
    figure = Figure(figsize=(8, 1.2 + 0.45 * len(labels) * max(1, len(shown)) / 2))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    height = 0.8 / max(1, len(shown))
    rows = np.arange(len(labels))
    for index, name in enumerate(shown):
        values = [per_supercategory[label].get(name, 0.0) for label in labels]
        axes.barh(rows + index * height, values, height, label=METRIC_LABELS[name])
    tick_labels = [f"{label} (n={per_supercategory[label]['count']})" for label in labels]
    axes.set_yticks(rows + height * (len(shown) - 1) / 2, tick_labels)
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("mean x100 (failures count as 0)")
    axes.set_title("Per super-category")
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def overlay_path(output_dir: Path, position: int, sample_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id)[:80]
    return Path(output_dir) / OVERLAY_DIR / f"{position:04d}_{safe}.png"


def write_overlay(path: Path, sample: GroundingSample, scored: ScoredSample) -> None:
    """The picture with the ground truth (green: mask, box, points) and the joint-prompt prediction (red)."""
    line = scored.line
    height, width = sample.image.shape[:2]
    figure = Figure(figsize=(6, 6 * height / width + 1.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(sample.image)
    for mask, colour in ((sample.mask, (0.0, 0.8, 0.0)), (scored.masks.get("joint"), (0.9, 0.1, 0.1))):
        if mask is not None and np.asarray(mask).any():
            tint = np.zeros((height, width, 4))
            tint[np.asarray(mask, dtype=bool)] = (*colour, 0.35)
            axes.imshow(tint)
    truth = line["ground_truth"]
    _draw_box_and_points(axes, truth["bbox_2d"], truth["point_2d"], "limegreen", "-", "o", "ground truth")
    prediction = line["prediction"]
    if prediction["box"] is not None:
        _draw_box_and_points(axes, prediction["box"], prediction["points"], "red", "--", "x", "prediction")
    axes.set_xlim(-0.5, width - 0.5)
    axes.set_ylim(height - 0.5, -0.5)
    axes.axis("off")
    axes.legend(loc="lower right", fontsize="x-small")
    scores = " · ".join(f"{METRIC_LABELS[k]} {100 * v:.1f}" for k, v in line["metrics"].items() if k in CHART_METRICS)
    status = scores if line["status"] == STATUS_OK else f"no grounding: {str(line['reason'])[:70]}"
    question = textwrap.shorten(line["question"], 160)
    axes.set_title(f"{line['id']} · {status}\n" + "\n".join(textwrap.wrap(question, 80)), fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def _draw_box_and_points(axes, box, points, colour: str, style: str, marker: str, label: str) -> None:
    x1, y1, x2, y2 = box
    axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linestyle=style, linewidth=1.5))
    xs, ys = zip(*points)
    axes.plot(xs, ys, linestyle="none", marker=marker, color=colour, markersize=8, label=label)

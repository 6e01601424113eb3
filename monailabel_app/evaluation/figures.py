"""The pictures of an evaluation report: bars per group with values and bootstrap intervals, the distribution of
per-sample values, one sample's overlay with its question and reasoning, and a comparison's differences.

Matplotlib is driven through its object API with the Agg canvas: no global backend switch, no display needed.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

METRIC_LABELS = {
    "iou": "IoU",
    "pdice": "pDice",
    "dice_points": "Dice (points)",
    "dice_box": "Dice (box)",
    "dice_joint": "Dice (joint)",
}
CHART_METRICS = ("iou", "pdice", "dice_joint")
TRUTH_COLOUR, PREDICTION_COLOUR = "limegreen", "red"

# The caption under an overlay: 10 pt monospace (about 14 px at the 100 dpi it is saved at, as readable as the page's
# text when the report shows the picture at its size), 70 characters a line to fit the 6-inch picture.
OVERLAY_TEXT_PT = 10
OVERLAY_LINE_CHARS = 70


def _figure(width: float, height: float, layout: str | None = None) -> Figure:
    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)
    return figure


def group_bars(path: Path, title: str, entries: Mapping[str, Mapping[str, Any]], metric_names: Sequence[str]) -> None:
    """Horizontal grouped bars: one group per label, one bar per headline metric (x100), each with its value written
    beside it and its 95% bootstrap interval as an error bar. A zero bar still shows its value ("0.0")."""
    shown = [name for name in CHART_METRICS if name in metric_names]
    labels = list(entries)
    figure = _figure(9, 1.6 + 0.32 * len(labels) * max(1, len(shown)), layout="constrained")
    axes = figure.add_subplot()
    height = 0.8 / max(1, len(shown))
    rows = np.arange(len(labels))
    top = 100.0
    for index, name in enumerate(shown):
        present = [name in entries[label] for label in labels]  # a group without masks has no Dice: no bar, "n/a"
        values = np.array([entries[label].get(name, 0.0) for label in labels])
        intervals = [(entries[label].get("ci95") or {}).get(name) or [v, v] for label, v in zip(labels, values)]
        low = np.array([max(0.0, v - lo) for v, (lo, _) in zip(values, intervals)])
        high = np.array([max(0.0, hi - v) for v, (_, hi) in zip(values, intervals)])
        bars = axes.barh(
            rows + index * height,
            values,
            height,
            xerr=[low, high],
            capsize=2,
            label=METRIC_LABELS[name],
            error_kw={"elinewidth": 0.8, "ecolor": "#444"},
        )
        texts = [f"{v:.1f}" if shown_here else "n/a" for v, shown_here in zip(values, present)]
        axes.bar_label(bars, labels=texts, padding=3, fontsize="x-small")
        top = max(top, float((values + high).max(initial=0.0)) + 12)
    tick_labels = [f"{label} (n={entries[label]['count']})" for label in labels]
    axes.set_yticks(rows + height * (len(shown) - 1) / 2, tick_labels, parse_math=False)  # "$" is text here
    axes.invert_yaxis()
    axes.set_xlim(0, top)
    axes.set_xlabel("mean x100 (failures count as 0); error bars: 95% bootstrap interval")
    axes.set_title(title)
    figure.legend(loc="outside lower center", ncols=max(1, len(shown)), fontsize="small")
    axes.grid(axis="x", alpha=0.3)
    figure.savefig(path, dpi=100)


def distribution_histograms(path: Path, values: Mapping[str, Sequence[float]]) -> None:
    """One histogram per metric of the per-sample values (x100): how the mean is made (many zeros and a few good
    answers, or everything middling). pDice runs to 200 (the paper's formula is 2·I/U of the point circles)."""
    names = list(values)
    figure = _figure(4 * max(1, len(names)), 3.2)
    for index, name in enumerate(names):
        axes = figure.add_subplot(1, max(1, len(names)), index + 1)
        data = np.asarray(values[name], dtype=float)
        upper = 200.0 if name == "pdice" else 100.0
        axes.hist(data, bins=20, range=(0.0, upper), color="#4878a8", edgecolor="white")
        axes.axvline(float(data.mean()) if data.size else 0.0, color="black", linestyle="--", linewidth=1, label="mean")
        axes.set_title(f"{METRIC_LABELS[name]} per sample (n={data.size})", fontsize="small")
        axes.set_xlabel("x100")
        axes.set_ylabel("samples")
        axes.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def overlay(
    path: Path,
    image: np.ndarray,
    line: Mapping[str, Any],
    truth_mask: Optional[np.ndarray],
    predicted_mask: Optional[np.ndarray],
    heading: str,
) -> None:
    """The picture with the ground truth (green: mask, box, points) and the prediction (red: the joint-prompt mask,
    the box and points), and under it the question, the model's reasoning and the sample's scores."""
    height, width = image.shape[:2]
    text = _overlay_text(line, heading)
    picture_height, text_height = 6 * height / width, 0.2 * len(text) + 0.2  # lines of 10 pt
    figure = _figure(6, picture_height + text_height)
    axes, notes = figure.subplots(2, 1, gridspec_kw={"height_ratios": [picture_height, text_height]})
    axes.imshow(image, cmap="gray" if image.ndim == 2 else None)
    for mask, colour in ((truth_mask, (0.0, 0.8, 0.0)), (predicted_mask, (0.9, 0.1, 0.1))):
        if mask is not None and np.asarray(mask).any():
            tint = np.zeros((height, width, 4))
            tint[np.asarray(mask, dtype=bool)] = (*colour, 0.35)
            axes.imshow(tint)
    truth = line["ground_truth"]
    draw_box_and_points(axes, truth["bbox_2d"], truth["point_2d"], TRUTH_COLOUR, "-", "o", "ground truth")
    prediction = line["prediction"]
    if prediction["box"] is not None:
        draw_box_and_points(axes, prediction["box"], prediction["points"], PREDICTION_COLOUR, "--", "x", "prediction")
    axes.set_xlim(-0.5, width - 0.5)
    axes.set_ylim(height - 0.5, -0.5)
    axes.axis("off")
    axes.legend(loc="lower right", fontsize="small")
    notes.axis("off")
    notes.text(
        0.0,
        1.0,
        "\n".join(text),
        fontsize=OVERLAY_TEXT_PT,
        family="monospace",
        va="top",
        transform=notes.transAxes,
        parse_math=False,  # a model's "$" is not TeX: matplotlib's math parser would fail on it
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")


def _overlay_text(line: Mapping[str, Any], heading: str) -> list[str]:
    scores = " · ".join(
        f"{METRIC_LABELS[name]} {100 * value:.1f}" for name, value in line["metrics"].items() if name in CHART_METRICS
    )
    status = scores if line["status"] == "ok" else f"no grounding: {str(line.get('reason'))[:80]}"
    text = [f"{heading}: {line['id']} · {status}"]
    text += textwrap.wrap("Q: " + str(line.get("question") or ""), OVERLAY_LINE_CHARS, max_lines=3, placeholder=" ...")
    reasoning = str(line.get("think") or "").strip() or "(no reasoning given)"
    text += textwrap.wrap("Reasoning: " + reasoning, OVERLAY_LINE_CHARS, max_lines=8, placeholder=" ...")
    return text


def draw_box_and_points(axes, box, points, colour: str, style: str, marker: str, label: str) -> None:
    x1, y1, x2, y2 = box
    axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linestyle=style, linewidth=1.5))
    xs, ys = zip(*points)
    axes.plot(xs, ys, linestyle="none", marker=marker, color=colour, markersize=8, label=label)


def difference_bars(path: Path, tests: Mapping[str, Mapping[str, Any]], label_a: str, label_b: str) -> None:
    """One bar per metric: the mean per-sample difference B - A (x100) with its 95% bootstrap interval."""
    names = list(tests)
    figure = _figure(7, 1.2 + 0.5 * len(names))
    axes = figure.add_subplot()
    values = np.array([100 * tests[name]["mean_difference"] for name in names])
    intervals = [tests[name]["interval"] or [tests[name]["mean_difference"]] * 2 for name in names]
    low = np.array([max(0.0, v - 100 * lo) for v, (lo, _) in zip(values, intervals)])
    high = np.array([max(0.0, 100 * hi - v) for v, (_, hi) in zip(values, intervals)])
    colours = ["#3a923a" if v > 0 else "#c0392b" if v < 0 else "#888" for v in values]
    bars = axes.barh(np.arange(len(names)), values, xerr=[low, high], capsize=3, color=colours)
    axes.bar_label(bars, labels=[f"{v:+.1f}" for v in values], padding=4, fontsize="small")
    axes.set_yticks(np.arange(len(names)), [METRIC_LABELS.get(name, name) for name in names])
    axes.invert_yaxis()
    axes.axvline(0, color="black", linewidth=0.8)
    span = float(max(np.abs(values) + np.maximum(low, high), default=1.0)) * 1.25 + 5  # room for the value labels
    axes.set_xlim(-span, span)
    axes.set_xlabel(f"mean per-sample difference x100: {label_b} minus {label_a} (95% bootstrap interval)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)

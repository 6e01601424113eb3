"""A comparison of two runs written out: compare.json, compare.md, compare.html (self-contained) and the chart of the
mean differences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from monailabel_app.core.statistics import RESAMPLES
from monailabel_app.evaluation.compare import FEW_PAIRS, verdict
from monailabel_app.evaluation.figures import METRIC_LABELS, difference_bars
from monailabel_app.evaluation.report import GROUP_TITLES
from monailabel_app.evaluation.report_document import (
    Block,
    Bullets,
    Heading,
    Paragraph,
    Picture,
    Table,
    render_html,
    render_markdown,
)

COMPARE_JSON = "compare.json"
COMPARE_MD = "compare.md"
COMPARE_HTML = "compare.html"
DIFFERENCE_CHART = "differences.png"


def write_comparison(output_dir: Path, comparison: Mapping[str, Any]) -> None:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / COMPARE_JSON).write_text(json.dumps(comparison, indent=2), encoding="utf-8")
    label_a, label_b = comparison["run_a"]["label"], comparison["run_b"]["label"]
    difference_bars(output_dir / DIFFERENCE_CHART, comparison["tests"], label_a, label_b)
    blocks = comparison_blocks(comparison)
    (output_dir / COMPARE_MD).write_text(render_markdown(blocks), encoding="utf-8")
    title = f"Comparison: {label_b} vs {label_a}"
    (output_dir / COMPARE_HTML).write_text(render_html(blocks, title, output_dir), encoding="utf-8")


def comparison_blocks(comparison: Mapping[str, Any]) -> list[Block]:
    a, b = comparison["run_a"], comparison["run_b"]
    facts = [
        f"A: `{a['folder']}`",
        f"B: `{b['folder']}`",
        f"{comparison['paired']} samples scored by both (only in A: {comparison['only_a']}, only in B: "
        f"{comparison['only_b']}; these are left out)",
        f"Left out too: {comparison['unanswered']} samples whose answer could not be had in one of the runs "
        "(a failed request, not the model's failure)",
    ]
    changed = comparison["settings_changed"]
    facts.append(
        "Settings that differ: " + "; ".join(f"{key}: `{old}` -> `{new}`" for key, (old, new) in changed.items())
        if changed
        else "The two runs have the same recorded settings"
    )
    if "data" in changed:
        facts.append("The runs scored different data files: only samples with the same id are paired")
    status = comparison["status_changes"]
    facts.append(
        f"Failed answers: {status['only_a']} only in A, {status['only_b']} only in B, {status['both']} in both"
    )
    blocks: list[Block] = [Heading(f"Comparison: {b['label']} (B) vs {a['label']} (A)", 1), Bullets(facts)]
    blocks += [Heading("Per metric"), Paragraph(f"Values x100. {comparison['method']}."), _tests_table(comparison)]
    if comparison["paired"] < FEW_PAIRS:
        blocks.append(
            Paragraph(
                f"Only {comparison['paired']} paired samples: bootstrap intervals and p-values are unreliable this "
                "small; read the Wilcoxon test, and score more samples before deciding."
            )
        )
    blocks.append(Picture(DIFFERENCE_CHART, "Mean per-sample difference B - A"))
    for key, groups in comparison["groups"].items():
        blocks += [Heading(f"Per {GROUP_TITLES[key].lower()}"), _group_table(key, groups, comparison["metric_names"])]
    blocks += _most_changed_blocks(comparison)
    return blocks


def _tests_table(comparison: Mapping[str, Any]) -> Table:
    rows = []
    for name, test in comparison["tests"].items():
        interval = test["interval"]
        rows.append(
            [
                METRIC_LABELS[name],
                str(test["count"]),
                f"{100 * test['mean_a']:.2f}",
                f"{100 * test['mean_b']:.2f}",
                f"{100 * test['mean_difference']:+.2f}",
                f"{100 * interval[0]:+.2f} – {100 * interval[1]:+.2f}" if interval else "",
                _bootstrap_p_text(test["bootstrap_p"]),
                f"{test['wilcoxon_p']:.3g}",
                f"{test['wins']} / {test['ties']} / {test['losses']}",
                verdict(test),
            ]
        )
    header = ["Metric", "n", "A", "B", "B - A", "95% interval", "bootstrap p", "Wilcoxon p", "B wins / ties / losses"]
    return Table([*header, "Reading"], rows)


def _bootstrap_p_text(p_value: float) -> str:
    """A bootstrap p-value can't go below 1 / (resamples + 1): say "<" there rather than print that floor."""
    return f"< {1 / (RESAMPLES + 1) * 1.0001:.2g}" if p_value <= 1 / (RESAMPLES + 1) else f"{p_value:.3g}"


def _group_table(key: str, groups: Mapping[str, Mapping[str, Any]], names) -> Table:
    rows = []
    for label, entry in groups.items():
        cells = [label, str(entry["count"])]
        for name in names:
            change = entry.get(name)
            cells.append(
                f"{100 * change['mean_difference']:+.2f} ({change['wins']}/{change['ties']}/{change['losses']})"
                if change
                else ""
            )
        rows.append(cells)
    return Table([GROUP_TITLES[key], "n", *(f"{METRIC_LABELS[name]} B - A (W/T/L)" for name in names)], rows)


def _most_changed_blocks(comparison: Mapping[str, Any]) -> list[Block]:
    changes = comparison["most_changed"]
    name = METRIC_LABELS[comparison["ranking_metric"]]
    if not changes:
        return [Heading("Samples that changed most"), Paragraph(f"No sample's {name} changed.")]
    rows = [
        [
            str(change["id"]),
            str(change.get("supercategory")),
            f"{100 * change['a']:.1f}",
            f"{100 * change['b']:.1f}",
            f"{100 * change['difference']:+.1f}",
            f"{change['status_a']} -> {change['status_b']}",
            str(change.get("question") or "")[:120],
        ]
        for change in changes
    ]
    return [
        Heading("Samples that changed most"),
        Paragraph(f"By {name}; each run's `results.jsonl` has the full answers."),
        Table(["Sample", "Super-category", "A", "B", "B - A", "Status", "Question"], rows),
    ]

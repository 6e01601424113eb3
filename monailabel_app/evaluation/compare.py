"""Two evaluation runs compared on the samples both scored: did B (a retrained checkpoint, another segmenter, no
reasoning, ...) do better than A, by how much, and is the difference more than chance?

Samples are paired by id. Per metric: both means, the mean per-sample difference B - A with its bootstrap interval, a
paired bootstrap p-value and the Wilcoxon signed-rank p-value (`statistics.paired_test`), and wins / ties / losses.
Per super-category and modality: the same counts and mean differences. And the samples whose score changed most,
with both answers' status, so a reviewer can look at them. A failed answer (no usable box) counts as 0, as in the
runs' own means; a sample whose answer could not be had at all in either run (a failed request, not the model's
failure) is left out and counted, so the two means here can differ slightly from the runs' own reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from monailabel_app.core.errors import RequestError
from monailabel_app.core.statistics import CONFIDENCE, RESAMPLES, SEED, TIE_TOLERANCE, paired_test
from monailabel_app.evaluation.metrics import metric_value
from monailabel_app.evaluation.run_folder import RESULTS_FILE, RESUME_KEYS, RUN_FILE, read_result_lines
from monailabel_app.evaluation.summary import BOX_POINT_METRICS, DICE_METRICS

COMPARE_GROUPS = ("supercategory", "modality")
MOST_CHANGED = 10
FEW_PAIRS = 10  # below this, bootstrap intervals and p-values are unreliable: the report says to read Wilcoxon's


@dataclass
class RunResults:
    folder: Path
    run: dict  # run.json
    lines: dict[str, dict]  # result lines by sample id, in file order (answers had)
    unanswered: set[str]  # ids whose answer could not be had (a failed request)

    @property
    def label(self) -> str:
        return self.folder.name or str(self.folder)


def read_run(folder: Path | str) -> RunResults:
    """A finished (or partly finished) run's folder; one line per id (the first), failed requests left out."""
    folder = Path(folder)
    lines = read_result_lines(folder / RESULTS_FILE)
    if not lines:
        raise RequestError(f"{folder} holds no evaluation results ({RESULTS_FILE}): run the evaluation first.")
    try:
        run = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        run = {}
    by_id: dict[str, dict] = {}
    unanswered: set[str] = set()
    for line in lines:
        if line.get("answer_error"):
            unanswered.add(str(line["id"]))
        else:
            by_id.setdefault(str(line["id"]), line)
    return RunResults(folder, run if isinstance(run, dict) else {}, by_id, unanswered - set(by_id))


def compare_runs(a: RunResults, b: RunResults, most_changed: int = MOST_CHANGED) -> dict:
    """What compare.json holds (see the module docstring)."""
    common = [sample_id for sample_id in a.lines if sample_id in b.lines]
    unanswered = (a.unanswered & (set(b.lines) | b.unanswered)) | (b.unanswered & set(a.lines))
    if not common:
        if unanswered:
            raise RequestError(f"{a.folder} and {b.folder}: no sample has an answer in both runs (failed requests).")
        raise RequestError(f"{a.folder} and {b.folder} have no sample in common: they scored different data.")
    pairs = [(a.lines[sample_id], b.lines[sample_id]) for sample_id in common]
    scored = [(x, y) for x, y in pairs if not (x.get("negative") or y.get("negative"))]  # negatives: no box to score
    names = _shared_metrics(scored)
    tests = {name: paired_test(*_paired_values(scored, name)).to_json() for name in names}
    ranking = "dice_joint" if "dice_joint" in names else "iou"  # a metric both runs have
    return {
        "run_a": {"folder": str(a.folder), "label": a.label, "run": a.run},
        "run_b": {"folder": str(b.folder), "label": b.label, "run": b.run},
        "settings_changed": {
            key: [a.run.get(key), b.run.get(key)] for key in RESUME_KEYS if a.run.get(key) != b.run.get(key)
        },
        "paired": len(common),
        "only_a": len(a.lines) - len(common),
        "only_b": len(b.lines) - len(common),
        "unanswered": len(unanswered),
        "method": (
            f"B minus A per sample; {round(100 * CONFIDENCE)}% percentile bootstrap interval of the mean difference "
            f"({RESAMPLES} resamples, seed {SEED}); two-sided paired bootstrap p (differences centred on 0) and "
            "Wilcoxon signed-rank p (scipy.stats.wilcoxon, zero differences dropped); no correction for testing "
            "several metrics"
        ),
        "metric_names": names,
        "tests": tests,
        "status_changes": _status_changes(pairs),
        "groups": {key: _group_changes(pairs, key, names) for key in COMPARE_GROUPS},
        "ranking_metric": ranking,
        "most_changed": _most_changed(pairs, ranking, most_changed),
    }


def _shared_metrics(pairs: Sequence[tuple[Mapping, Mapping]]) -> list[str]:
    present = [
        name
        for name in (*BOX_POINT_METRICS, *DICE_METRICS)
        if any(name in line_a["metrics"] and name in line_b["metrics"] for line_a, line_b in pairs)
    ]
    return present


def _paired_values(pairs: Sequence[tuple[Mapping, Mapping]], name: str) -> tuple[list[float], list[float]]:
    """Both runs' values of one metric over the pairs where both have it (Dice needs a ground-truth mask)."""
    kept = (
        [(a, b) for a, b in pairs if name in a["metrics"] and name in b["metrics"]] if name in DICE_METRICS else pairs
    )
    return [metric_value(a["metrics"], name) for a, _ in kept], [metric_value(b["metrics"], name) for _, b in kept]


def _status_changes(pairs: Sequence[tuple[Mapping, Mapping]]) -> dict[str, int]:
    failed = {"both": 0, "only_a": 0, "only_b": 0}
    for a, b in pairs:
        a_failed, b_failed = a["status"] != "ok", b["status"] != "ok"
        if a_failed and b_failed:
            failed["both"] += 1
        elif a_failed:
            failed["only_a"] += 1
        elif b_failed:
            failed["only_b"] += 1
    return failed


def _group_changes(pairs: Sequence[tuple[Mapping, Mapping]], key: str, names: Sequence[str]) -> dict:
    groups: dict[str, list] = {}
    for a, b in pairs:
        groups.setdefault(str(a.get(key) or "unknown"), []).append((a, b))
    out = {}
    for label in sorted(groups):
        members = groups[label]
        entry: dict[str, Any] = {"count": len(members)}
        for name in names:
            values_a, values_b = _paired_values(members, name)
            if values_a:
                differences = np.asarray(values_b) - np.asarray(values_a)
                entry[name] = {
                    "mean_difference": float(differences.mean()),
                    "wins": int((differences > TIE_TOLERANCE).sum()),
                    "losses": int((differences < -TIE_TOLERANCE).sum()),
                    "ties": int((np.abs(differences) <= TIE_TOLERANCE).sum()),
                }
        out[label] = entry
    return out


def _most_changed(pairs: Sequence[tuple[Mapping, Mapping]], name: str, count: int) -> list[dict]:
    changes = []
    for a, b in pairs:
        value_a, value_b = metric_value(a["metrics"], name), metric_value(b["metrics"], name)
        if abs(value_b - value_a) > TIE_TOLERANCE:
            changes.append(
                {
                    "id": a["id"],
                    "question": a.get("question"),
                    "supercategory": a.get("supercategory"),
                    "a": value_a,
                    "b": value_b,
                    "difference": value_b - value_a,
                    "status_a": a["status"],
                    "status_b": b["status"],
                    "reason_b": b.get("reason"),
                }
            )
    changes.sort(key=lambda change: (-abs(change["difference"]), str(change["id"])))
    return changes[:count]


def verdict(test: Mapping[str, Any], alpha: float = 0.05) -> str:
    """A plain-words reading of one metric's paired test, for the report."""
    if test["count"] < 2:
        return "one sample: no test possible"
    significant = test["wilcoxon_p"] < alpha and test["bootstrap_p"] < alpha
    direction = "better" if test["mean_difference"] > 0 else "worse"
    if test["mean_difference"] == 0 or not significant:
        return "no clear difference"
    return f"B {direction} (both tests p < {alpha})"


def headline(comparison: Mapping[str, Any], name: Optional[str] = None) -> str:
    name = name or comparison["ranking_metric"]
    test = comparison["tests"].get(name)
    if test is None:
        return "nothing to compare"
    return (
        f"{name}: {100 * test['mean_a']:.2f} -> {100 * test['mean_b']:.2f} "
        f"({100 * test['mean_difference']:+.2f}; Wilcoxon p={test['wilcoxon_p']:.3g}; {comparison['paired']} samples)"
    )

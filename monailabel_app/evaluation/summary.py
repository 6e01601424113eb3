"""What a run's result lines add up to: the paper's means (overall and per group) with bootstrap intervals, the
distribution of per-sample values, why answers failed, and how long they took.

Everything is computed from the lines of `results.jsonl` alone, so a resumed run, or one re-scored from an answers
file, reports exactly what its lines say. Means are x100 and a failed sample counts as 0 in every one of them (the
paper's rule). Dice is averaged over the samples that have a ground-truth mask (all of them for U-MRG and datastore
labels). Negatives (saved "no finding" labels) have no box to score: the paper's means are over the positives, and
`abstention` gives the false-positive rate on negatives (a box where there is nothing) and the abstention rate on
positives ("not in this image" where there is something) beside them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from monailabel_app.core.statistics import CONFIDENCE, RESAMPLES, SEED, bootstrap_interval, quantiles
from monailabel_app.evaluation.metrics import GROUP_KEYS, PROMPT_SETTINGS, aggregate, metric_value, positives
from monailabel_app.grounding.pipeline import STATUS_NOT_FOUND, STATUS_OK

BOX_POINT_METRICS = ("iou", "pdice")
DICE_METRICS = tuple(f"dice_{setting}" for setting in PROMPT_SETTINGS)
NO_ANSWER = "no answer from the model (request failed or answer missing)"
DISTRIBUTION_POINTS = (0.1, 0.25, 0.5, 0.75, 0.9)
LATENCY_POINTS = (0.5, 0.9, 0.99)
INTERVALS_TEXT = f"{round(100 * CONFIDENCE)}% percentile bootstrap over samples, {RESAMPLES} resamples, seed {SEED}"
# timing keys of a result line
TIMING_KEYS = ("prefill_s", "decode_s", "segment_s", "new_tokens")


def summarise(lines: Sequence[Mapping[str, Any]]) -> dict:
    """{"overall": {...}, "supercategory": {label: {...}}, "category": ..., "modality": ...} of means x100 and counts,
    each entry with "ci95": {metric: [low, high]} (x100); Dice entries (and "dice_count") where some sample had a
    ground-truth mask."""
    records = [{**line["metrics"], **{key: line.get(key) for key in GROUP_KEYS}} for line in positives(lines)]
    summary = aggregate(records, BOX_POINT_METRICS)
    with_dice = [record for record in records if "dice_joint" in record]
    if with_dice:
        dice = aggregate(with_dice, DICE_METRICS)
        _add_dice(summary["overall"], dice["overall"])
        for key in GROUP_KEYS:
            for label, entry in dice[key].items():
                _add_dice(summary[key][label], entry)
    _add_intervals(summary["overall"], records)
    for key in GROUP_KEYS:
        members: dict[str, list] = defaultdict(list)
        for record in records:
            members["unknown" if record.get(key) is None else str(record[key])].append(record)
        for label, entry in summary[key].items():
            _add_intervals(entry, members[label])
    return summary


def abstention(lines: Sequence[Mapping[str, Any]]) -> dict:
    """Rates x100: boxes on negatives (false positives), abstentions on negatives, abstentions on positives."""
    negatives = [line for line in lines if line.get("negative")]
    positive = positives(lines)

    def rate(members: Sequence[Mapping[str, Any]], status: str) -> Any:
        return round(100.0 * sum(line["status"] == status for line in members) / len(members), 2) if members else None

    return {
        "negatives": len(negatives),
        "false_positive_rate": rate(negatives, STATUS_OK),
        "abstained_on_negatives": rate(negatives, STATUS_NOT_FOUND),
        "positives": len(positive),
        "abstention_rate_on_positives": rate(positive, STATUS_NOT_FOUND),
    }


def _add_dice(entry: dict, dice_entry: Mapping[str, Any]) -> None:
    entry.update({name: dice_entry[name] for name in DICE_METRICS}, dice_count=dice_entry["count"])


def _add_intervals(entry: dict, records: Sequence[Mapping[str, Any]]) -> None:
    intervals = {}
    for name in (*BOX_POINT_METRICS, *DICE_METRICS):
        if name in entry:
            values = metric_values(records, name)
            interval = bootstrap_interval(values)
            intervals[name] = interval.scaled(100.0).to_json() if interval else None
    entry["ci95"] = intervals


def metric_values(records: Iterable[Mapping[str, Any]], name: str) -> list[float]:
    """Per-sample values of one metric (failures as 0); Dice only over records that have it."""
    records = list(records)
    if name in DICE_METRICS:
        records = [record for record in records if name in record]
    return [metric_value(record, name) for record in records]


def distributions(lines: Sequence[Mapping[str, Any]], metric_names: Sequence[str]) -> dict:
    """Per metric: quantiles of the per-sample values (x100), the share of samples at exactly 0, and the mean."""
    out = {}
    for name in metric_names:
        values = np.asarray(metric_values((line["metrics"] for line in lines), name)) * 100.0
        if values.size:
            out[name] = {
                "quantiles": dict(zip(_point_names(DISTRIBUTION_POINTS), quantiles(values, DISTRIBUTION_POINTS))),
                "zero_share": float((values == 0).mean()),
                "mean": float(values.mean()),
                "count": int(values.size),
            }
    return out


def failure_reasons(lines: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many samples failed for each kind of reason (the reason text up to its first colon)."""
    kinds = Counter(
        NO_ANSWER if line.get("answer_error") else str(line.get("reason") or "unknown").split(":")[0][:120]
        for line in lines
        if line["status"] != STATUS_OK and not line.get("negative")
    )
    return dict(kinds.most_common())


def latency(lines: Sequence[Mapping[str, Any]]) -> dict:
    """Percentiles of the reasoner's time (prefill + decode), its parts, the new tokens and the segmenter's time,
    over the lines that measured them (an answers file may carry none: then the entry is absent)."""
    series: dict[str, list[float]] = {name: [] for name in ("reasoner_s", *TIMING_KEYS)}
    for line in lines:
        timing = line.get("timing") or {}
        for key in TIMING_KEYS:
            value = timing.get(key)
            if isinstance(value, (int, float)) and value > 0:
                series[key].append(float(value))
        reasoner = sum(float(timing.get(key) or 0.0) for key in ("prefill_s", "decode_s"))
        if reasoner > 0:
            series["reasoner_s"].append(reasoner)
    out = {}
    for name, values in series.items():
        if values:
            points = dict(zip(_point_names(LATENCY_POINTS), quantiles(values, LATENCY_POINTS)))
            out[name] = {**points, "max": max(values), "count": len(values)}
    return out


def _point_names(points: Sequence[float]) -> list[str]:
    return [f"p{round(100 * point)}" for point in points]


def build_metrics(
    lines: Sequence[Mapping[str, Any]], run: Mapping[str, Any], loading: str, session: Mapping[str, Any]
) -> dict:
    """What metrics.json holds: the run's settings, the loading tally, the table, failures, distributions, latency,
    and what this session of the run did (`session`)."""
    summary = summarise(lines)
    scored = positives(lines)
    grounded = sum(line["status"] == STATUS_OK for line in scored)
    metric_names = [name for name in (*BOX_POINT_METRICS, *DICE_METRICS) if name in summary["overall"]]
    return {
        "run": dict(run),
        "loading": loading,
        "session": dict(session),
        "samples": len(scored),
        "grounded": grounded,
        "failed": len(scored) - grounded,
        "failure_rate": (len(scored) - grounded) / len(scored) if scored else 0.0,
        "failure_reasons": failure_reasons(lines),
        "abstention": abstention(lines),
        "scale": "means x100; a failed sample counts as 0 in every mean",
        "intervals": INTERVALS_TEXT,
        "metric_names": metric_names,
        **summary,
        "distributions": distributions(scored, metric_names),
        "latency": latency(lines),
    }

"""The overlay pictures of a report: the worst, the median and the best samples of the run, so a reader sees what a
failure, a typical answer and a success look like (not whichever samples happened to come first).

Samples are ranked by joint-prompt Dice when every sample has it (a mask and a segmenter), else by box IoU, so samples
without a mask never fill the worst (failures score 0, ties broken by id). The pictures are drawn after scoring, from
all result lines (a resumed run included): the chosen samples are read again from the data, and the segmenter is
prompted again with the recorded box and points for the predicted mask. A picture that can't be drawn is logged and
left out; the report is still written.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from monailabel_app.data.sample import GroundingSample
from monailabel_app.evaluation.figures import overlay
from monailabel_app.evaluation.metrics import metric_value, positives
from monailabel_app.segmentation.segmenter import Segmenter

logger = logging.getLogger(__name__)
OVERLAY_DIR = "overlays"
OVERLAY_KINDS = ("worst", "median", "best")


@dataclass
class ChosenOverlay:
    kind: str  # one of OVERLAY_KINDS
    rank: int  # 1 = the most extreme of its kind
    line: Mapping[str, Any]
    path: Optional[str] = None  # relative to the output folder, once drawn


def ranking_metric(lines: Sequence[Mapping[str, Any]]) -> str:
    """Joint Dice when every sample has it (all have a mask and a segmenter ran), else box IoU."""
    return "dice_joint" if lines and all("dice_joint" in line["metrics"] for line in lines) else "iou"


def choose_overlays(lines: Sequence[Mapping[str, Any]], per_kind: int) -> list[ChosenOverlay]:
    """`per_kind` worst, median and best samples, each sample at most once (small runs give fewer)."""
    lines = positives(lines)  # a negative has no target to draw
    if per_kind <= 0 or not lines:
        return []
    metric = ranking_metric(lines)
    ordered = sorted(lines, key=lambda line: (metric_value(line["metrics"], metric), str(line["id"])))
    middle = max(0, len(ordered) // 2 - per_kind // 2)
    picks = {
        "worst": ordered[:per_kind],
        "median": ordered[middle : middle + per_kind],
        "best": list(reversed(ordered[-per_kind:])),
    }
    chosen, seen = [], set()
    for kind in OVERLAY_KINDS:
        for rank, line in enumerate(picks[kind], start=1):
            if line["id"] not in seen:
                seen.add(line["id"])
                chosen.append(ChosenOverlay(kind, rank, line))
    return chosen


def write_overlays(
    output_dir: Path,
    chosen: list[ChosenOverlay],
    samples: Iterable[GroundingSample],
    segmenter: Optional[Segmenter],
) -> list[ChosenOverlay]:
    """Draws each chosen sample into `output_dir/overlays/` (replacing earlier pictures); returns those drawn."""
    folder = Path(output_dir) / OVERLAY_DIR
    shutil.rmtree(folder, ignore_errors=True)
    wanted = {str(item.line["id"]): item for item in chosen}
    drawn = []
    for sample in samples:
        item = wanted.pop(sample.sample_id, None)
        if item is not None:
            name = f"{item.kind}-{item.rank}_{_safe(sample.sample_id)}.png"
            try:
                predicted = _predicted_mask(segmenter, sample, item)
                overlay(folder / name, sample.image, item.line, sample.mask, predicted, f"{item.kind} #{item.rank}")
            except Exception:  # one picture must never cost the run its report
                logger.warning("Could not draw the overlay of %s", sample.sample_id, exc_info=True)
                continue
            item.path = f"{OVERLAY_DIR}/{name}"
            drawn.append(item)
        if not wanted:
            break
    order = {id(item): position for position, item in enumerate(chosen)}
    return sorted(drawn, key=lambda item: order[id(item)])


def _predicted_mask(segmenter: Optional[Segmenter], sample: GroundingSample, item: ChosenOverlay):
    prediction = item.line["prediction"]
    if segmenter is None or prediction.get("box") is None:
        return None
    return segmenter.segment(sample.image, box=prediction["box"], points=prediction["points"]).mask


def _safe(sample_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id)[:80]

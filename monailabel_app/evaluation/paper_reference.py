"""The MedReasoner paper's published figures (docs/method.md §7), and when a run may be printed beside them.

A figure is only comparable with a run measured the same way:
- IoU and pDice depend on the reasoner, the data split and the frame the coordinates are scored in: the run must score
  the whole U-MRG-14K test split (a file named `test.parquet` with at least `MIN_TEST_SAMPLES` samples, none skipped
  at loading or dropped as repeated, no `--limit`, every answer had: no failed request), with the released
  evaluation's parser (`--parser paper`), the paper's reasoning prompt (think on) and greedy decoding. The split is
  recognised by its file name and size only: the report says so, and a file renamed `test.parquet` would pass;
- Dice also depends on the segmenter: the paper's used MedSAM2 with the joint prompt, so a run with LiteMedSAM or SAM
  is not comparable in Dice even when it is in IoU and pDice.
Where a run is not comparable the report says which condition failed instead of printing the figures.
"""

from __future__ import annotations

from typing import Any, Mapping

from monailabel_app.evaluation.summary import NO_ANSWER

# model: {metric: value x100}; MedSAM2 segmenter, joint prompt
PAPER_FIGURES = {
    "MedReasoner-7B": {"iou": 32.42, "pdice": 26.55, "dice_joint": 37.78},
    "Qwen2.5-VL-72B": {"iou": 18.32, "pdice": 12.39, "dice_joint": 29.71},
    "Lingshu-7B (before RL)": {"iou": 8.19, "pdice": 3.73, "dice_joint": 16.48},
}
PAPER_SEGMENTER_KINDS = ("medsam2",)
TEST_SPLIT_FILE = "test.parquet"
MIN_TEST_SAMPLES = 2000  # U-MRG-14K's test split has about 2,200; fewer means a subset


def comparability(metrics: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per published metric, the reasons the run is not comparable with the paper (an empty list: comparable)."""
    run = metrics.get("run", {})
    shared = []
    data = str(run.get("data") or "")
    if run.get("source") != "data" or not data.endswith(TEST_SPLIT_FILE):
        shared.append(f"the data is not U-MRG-14K's `{TEST_SPLIT_FILE}`")
    elif metrics.get("samples", 0) < MIN_TEST_SAMPLES:
        shared.append(f"only {metrics.get('samples', 0)} samples (the test split has about 2,200): a subset")
    if run.get("limit") is not None:
        shared.append(f"`--limit {run['limit']}` scored a subset")
    session = metrics.get("session") or {}
    if session.get("skipped_at_loading") or session.get("repeated_ids_removed"):
        shared.append("samples were skipped at loading or dropped as repeated ids")
    unanswered = (metrics.get("failure_reasons") or {}).get(NO_ANSWER, 0)
    if unanswered:
        shared.append(f"{unanswered} answers could not be had (failed requests count as 0 here, not in the paper)")
    if run.get("parser") != "paper":
        shared.append(f"parser `{run.get('parser')}` (the paper's evaluation parses strictly: `--parser paper`)")
    if run.get("think") is False:
        shared.append("answers without reasoning (the paper's prompt asks for it)")
    sampling = run.get("sampling") or {}
    if sampling and sampling.get("temperature", 0) != 0:
        shared.append("sampled decoding (the paper's evaluation is greedy)")
    segmenter = str(run.get("segmenter") or "none").lower()
    dice_only = (
        [] if segmenter in PAPER_SEGMENTER_KINDS else [f"segmenter `{segmenter}` (the paper's Dice is MedSAM2's)"]
    )
    return {"iou": shared, "pdice": shared, "dice_joint": shared + dice_only}

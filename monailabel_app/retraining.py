"""Active learning's last step: GRPO on the clinicians' saved labels, then publish the reasoner if the run completed.

Framework-free: the MONAI Label train task hands in plain datastore entries ({"image", "label", "label_info"}); the
question lives in the label's info under "question" (see `datastore_samples`). A run that fails or is stopped
publishes nothing; the figures of the last run, with the mean greedy reward on the labels before and after
(`greedy_check`), are kept in `train_stats.json` for the train task's `stats()`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

from monailabel_app.greedy_check import mean_greedy_reward
from monailabel_app.grounding_data import load_samples
from monailabel_app.grpo_config import GRPOConfig
from monailabel_app.load_report import LoadReport
from monailabel_app.reasoner_publisher import prune_oldest, publish_reasoner
from monailabel_app.train import train_reasoner

STATS_FILE = "train_stats.json"
RUNS_DIR = "train_runs"


class NoTrainingDataError(ValueError):
    """No saved label could be used; the message lists why each was skipped."""


def retrain_reasoner(
    entries: Sequence[dict],
    base_reasoner: str,
    model_dir: str | Path,
    config: GRPOConfig,
    stop_file: Optional[str] = None,
) -> dict:
    """Train from `base_reasoner` on `entries`; publish into `model_dir` when the run completes. Returns the stats."""
    model_dir = Path(model_dir)
    run_name = time.strftime("%Y%m%d-%H%M%S")
    run_dir = model_dir / RUNS_DIR / run_name
    report = LoadReport()
    samples = list(load_samples(list(entries), report))
    stats = {"run": run_name, "base_reasoner": str(base_reasoner), "final_labels": len(entries), "samples": len(samples)}
    stats["data"] = report.summary()
    try:
        if not samples:
            raise NoTrainingDataError(f"No usable training samples among {len(entries)} saved labels: {report.summary()}")
        stats["greedy_reward_before"] = mean_greedy_reward(str(base_reasoner), samples, config)
        result = train_reasoner(samples, config, str(base_reasoner), str(run_dir), stop_file=stop_file)
        stats.update({k: result.get(k) for k in ("status", "steps_done", "total_steps", "seconds")})
        stats.update(mean_reward_first=result.get("mean_reward_first"), mean_reward_last=result.get("mean_reward_last"))
        if result.get("status") == "completed":
            stats["greedy_reward_after"] = mean_greedy_reward(result["model_dir"], samples, config)
            stats["published"] = str(publish_reasoner(result["model_dir"], model_dir, run_name))
        prune_oldest(run_dir.parent, keep=run_dir)  # checkpoints of old runs: a full 7B one is tens of GB
        return stats
    except BaseException as error:
        stats.update(status="failed", error=f"{type(error).__name__}: {error}")
        raise
    finally:
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / STATS_FILE).write_text(json.dumps(stats, indent=2, default=str))


def last_training_stats(model_dir: str | Path) -> dict:
    path = Path(model_dir) / STATS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}

"""Active learning's last step: GRPO on the clinicians' saved labels, then publish the reasoner if the run completed.

Framework-free: the MONAI Label train task hands in plain datastore entries ({"image", "label", "label_info"}); the
question lives in the label's info under "question" (see `datastore_samples`). A run that fails or is stopped
publishes nothing, and so does a completed run whose reasoner is worse than the one it started from on held-out labels
(`publish_check`, when the site has enough labels to tell). The figures of the last run, with the mean greedy reward
on the labels before and after (`greedy_check`) and the publish check, are kept in `train_stats.json` for the train
task's `stats()`. The run holds its model folder for its whole life (`run_owner`): only the holder writes the stats,
cleans up and publishes, and a run whose server is gone publishes nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional, Sequence

from monailabel_app.core.errors import RequestError
from monailabel_app.data.load_report import LoadReport
from monailabel_app.data.loaders import load_samples
from monailabel_app.reasoning.model_store import PublishWithdrawnError, prune_oldest, publish_reasoner
from monailabel_app.training.abstention import trainable_samples
from monailabel_app.training.config import GRPOConfig
from monailabel_app.training.greedy_check import mean_greedy_reward
from monailabel_app.training.publish_check import MIN_HELD_OUT, check_before_publish, skipped, split_held_out
from monailabel_app.training.run import train_reasoner
from monailabel_app.training.run_owner import RunOwner, claim_run
from monailabel_app.training.run_records import RUNS_DIR


class NoTrainingDataError(RequestError):
    """No saved label could be used; the message lists why each was skipped."""


def retrain_reasoner(
    entries: Sequence[dict],
    base_reasoner: str,
    model_dir: str | Path,
    config: GRPOConfig,
    stop_file: Optional[str] = None,
    min_held_out: int = MIN_HELD_OUT,
    run: Optional[RunOwner] = None,
    force_publish: bool = False,
) -> dict:
    """Train from `base_reasoner` on `entries`; publish into `model_dir` when the run completes and the publish check
    (with at least `min_held_out` held-out labels; 0 turns it off) does not refuse it, or, with too few labels for it,
    when the mean greedy reward on the saved labels rose (or `force_publish`). Returns the stats, which say what ended
    the run (`ended_by`) and why it was published or not (`publish_decision`). `run`: this run's hold on `model_dir`
    (the train task claims it with its server); without one it is claimed here."""
    if run is None:
        with claim_run(model_dir) as claimed:
            return retrain_reasoner(
                entries, base_reasoner, model_dir, config, stop_file, min_held_out, claimed, force_publish
            )
    model_dir = Path(model_dir)
    run.remove_unfinished_runs()  # a run stopped from outside (its process killed) could not clean up itself
    run_name = run.run_name
    run_dir = model_dir / RUNS_DIR / run_name
    stats = {"run": run_name, "status": "running", "base_reasoner": str(base_reasoner), "final_labels": len(entries)}
    run.write_stats(stats)  # /info shows this run at once, not the previous one
    report = LoadReport()
    samples, set_aside = trainable_samples(list(load_samples(list(entries), report)), config)
    stats.update(samples=len(samples), data=report.summary())
    if set_aside:
        stats["negatives_set_aside"] = set_aside  # "no finding" labels: abstain_reward is 0, nothing to learn
    try:
        if not samples:
            raise NoTrainingDataError(
                f"No usable training samples among {len(entries)} saved labels: {report.summary()}"
            )
        training, held_out = split_held_out(samples, min_held_out)
        stats["held_out"] = len(held_out)
        config = fit_to_samples(config, len(training), stats)
        stats["greedy_reward_before"] = mean_greedy_reward(str(base_reasoner), training, config)
        result = train_reasoner(training, config, str(base_reasoner), str(run_dir), stop_file=stop_file)
        stats.update({k: result.get(k) for k in ("status", "steps_done", "total_steps", "seconds")})
        stats.update(mean_reward_first=result.get("mean_reward_first"), mean_reward_last=result.get("mean_reward_last"))
        stats["ended_by"] = what_ended(result, config, len(training))
        if not run.holds:
            return stats  # a rank process: the run's holder (rank 0) checks and publishes
        if result.get("status") == "completed":
            stats["greedy_reward_after"] = mean_greedy_reward(result["model_dir"], training, config)
            if held_out:
                check = check_before_publish(str(base_reasoner), result["model_dir"], held_out, config)
            else:
                check = skipped(samples, min_held_out)
            stats["publish_check"] = check
            decision, publishing = publish_decision(check, stats, min_held_out, force_publish)
            stats["publish_decision"] = decision
            stats["published"] = None
            if publishing:
                stats["published"] = publish(result["model_dir"], model_dir, run, str(base_reasoner), stats)
        prune_oldest(run_dir.parent, keep=run_dir)  # checkpoints of old runs: a full 7B one is tens of GB
        return stats
    except BaseException as error:
        stats.update(status="failed", error=f"{type(error).__name__}: {error}")
        if run.holds:  # a failed run's checkpoints (a full 7B copy) are of no use; a rank's folder is the holder's
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        run.write_stats(stats)


def publish(trained_dir: str, model_dir: Path, run: RunOwner, base_reasoner: str, stats: dict) -> Optional[str]:
    """The published link, or None when the run may no longer publish (the server that started it is gone)."""
    try:
        return str(publish_reasoner(trained_dir, model_dir, run.run_name, base_reasoner, may_publish=run.may_publish))
    except PublishWithdrawnError:
        stats.update(status="stopped", note="not published: the server that started this run is gone")
        return None


def what_ended(result: dict, config: GRPOConfig, num_samples: int) -> str:
    """What ended the run, in words: a stop request, `max_steps` (a cap), or the end of its epochs."""
    done, total = result.get("steps_done"), result.get("total_steps")
    if result.get("status") == "stopped":
        return f"stopped on request after {done} of {total} steps"
    per_epoch = max(1, num_samples // config.prompts_per_step)
    epochs_steps = config.epochs * per_epoch
    if config.max_steps > 0 and config.max_steps <= epochs_steps:
        return f"max_steps: {config.max_steps} steps done, before the end of its {config.epochs} epochs"
    capped = f"; max_steps {config.max_steps} is a cap, not a target" if config.max_steps > 0 else ""
    return (
        f"its epochs: {config.epochs} epochs of {per_epoch} step(s) over {num_samples} sample(s) = {epochs_steps} "
        f"steps{capped}"
    )


def publish_decision(check: dict, stats: dict, min_held_out: int, force: bool) -> tuple[str, bool]:
    """(why, publish?) after a completed run. With enough labels the held-out check decides; with too few, the new
    reasoner must answer its own saved labels better than the one it started from (mean greedy reward), unless the
    admin forces the publish (`force_publish`); with the check turned off (`min_held_out` 0) it is published."""
    if check["status"] == "refused":
        return "not published: worse than the reasoner it started from on held-out labels (publish_check)", False
    if check["status"] == "passed":
        return "published: not worse than the reasoner it started from on held-out labels (publish_check)", True
    if min_held_out <= 0:
        return "published: the publish check is turned off", True
    before, after = stats.get("greedy_reward_before"), stats.get("greedy_reward_after")
    figures = f"mean greedy reward on the saved labels {before} -> {after}"
    if before is not None and after is not None and after > before:
        return f"published: {figures} rose (too few labels for the held-out check)", True
    if force:
        return f"published because force_publish was set, although {figures} did not rise", True
    return (
        f"not published: {figures} did not rise, and there are too few labels for the held-out check; set the train "
        "option force_publish (or --conf train_force_publish true) to publish anyway",
        False,
    )


def fit_to_samples(config: GRPOConfig, num_samples: int, stats: dict) -> GRPOConfig:
    """A site with fewer saved labels than `prompts_per_step` still trains: every step takes all of them."""
    if num_samples >= config.prompts_per_step:
        return config
    stats["note"] = f"prompts_per_step lowered from {config.prompts_per_step} to the {num_samples} samples there are"
    return config.replace(prompts_per_step=num_samples, mini_batch_prompts=num_samples)

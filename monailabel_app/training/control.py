"""What a caller running GRPO training elsewhere (a thread, a MONAI Label train subprocess) needs from it: progress
figures out after every step, and a way to ask it to stop cleanly (it saves a resumable checkpoint and the model
trained so far).

A stop is requested by setting a `threading.Event` (same process) or creating a file (any process: MONAI Label's
train task runs in a subprocess). Progress goes to a callback and, atomically rewritten, to a JSON file.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Optional

import lightning.pytorch as pl
import torch

from monailabel_app.core.json_files import write_json_atomically

PROGRESS_FILE = "progress.json"
MEAN_REWARD_KEY = "reward/score_mean"


class TrainingControl(pl.Callback):
    """Reports `{"steps_done", "total_steps", "mean_reward", "elapsed_s"}` after each GRPO step and stops on request.

    `reward_curve` holds this run's per-step mean rewards (a resumed run starts a new curve).
    """

    def __init__(
        self,
        total_steps: int,
        progress_file: Optional[Path] = None,
        on_progress: Optional[Callable[[dict], None]] = None,
        stop_event: Optional[threading.Event] = None,
        stop_file: Optional[Path] = None,
    ) -> None:
        self.total_steps = total_steps
        self.progress_file = progress_file
        self.on_progress = on_progress
        self.stop_event = stop_event
        self.stop_file = Path(stop_file) if stop_file else None
        self.reward_curve: list[float] = []
        self.stopped_early = False
        self._started = time.perf_counter()

    def stop_requested(self) -> bool:
        return bool(
            (self.stop_event is not None and self.stop_event.is_set())
            or (self.stop_file is not None and self.stop_file.exists())
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        rank_mean = torch.tensor(pl_module.last_step_figures[MEAN_REWARD_KEY], device=pl_module.device)
        mean_reward = float(trainer.strategy.reduce(rank_mean, reduce_op="mean"))  # all GPUs' prompts count
        self.reward_curve.append(mean_reward)
        progress = {
            "steps_done": pl_module.steps_done,
            "total_steps": self.total_steps,
            "mean_reward": mean_reward,
            "elapsed_s": round(time.perf_counter() - self._started, 3),
        }
        if trainer.is_global_zero:
            if self.progress_file is not None:
                write_json_atomically(self.progress_file, progress)
            if self.on_progress is not None:
                self.on_progress(progress)
        if trainer.strategy.reduce_boolean_decision(self.stop_requested(), all=False):
            self.stopped_early = True
            trainer.should_stop = True

"""GRPO training of the grounding reasoner: `train_reasoner` for programs; `python -m monailabel_app.train`
(`training/cli.py`) runs it from the command line:

    python -m monailabel_app.train --config hospital --data train.parquet \\
        --model /models/Lingshu-7B --output runs/hospital [--resume] [--set lr=2e-6 --set max_steps=20]

Several GPUs on one node: Lightning starts one process
per GPU itself (`devices: -1` uses all visible ones; on CPU `devices: 2` starts two processes with DDP over gloo, as
the tests do); several nodes: run the same command on every node under a
cluster launcher that sets the usual variables (SLURM, or MASTER_ADDR / NODE_RANK / WORLD_SIZE) with `num_nodes`.

For programs (the MONAI Label train task calls this in a subprocess):

    result = train_reasoner(samples, config, model_path, output_dir,
                            resume=True, stop_event=None, stop_file=None, on_progress=None)

- `samples`: `GroundingSample`s, any iterable (ground truth in original pixels); `config`: a `GRPOConfig`.
- Progress: `on_progress(dict)` after every GRPO step, and `output_dir/progress.json` rewritten atomically:
  `{"steps_done", "total_steps", "mean_reward", "elapsed_s"}`.
- Stop early: set `stop_event` (a `threading.Event`) or create `stop_file`; the current step finishes, a checkpoint
  and the model trained so far are saved, and the result says "stopped".
- Failure: `train_reasoner` raises, and `output_dir/result.json` says `"status": "failed"` with the error; the command
  line exits with status 1.
- Result (also `output_dir/result.json`): `status` ("completed" | "stopped"), `steps_done`, `total_steps`,
  `mean_reward_first`, `mean_reward_last`, `reward_curve` (this run's per-step means), `model_dir` (the trained
  reasoner as a Hugging Face folder, LoRA merged), `checkpoint`, `resumed_from`, `seconds`.
- Resume: with `resume=True` an existing `output_dir/checkpoints/last.ckpt` is continued (same step count, same
  prompt order); without one, training starts fresh. `last.ckpt` is refreshed every `save_every_steps` steps and at
  the end, so a crashed run loses at most that many steps.

On GPUs the Trainer uses Lightning's DeepSpeedStrategy with the config's ZeRO stage and offload; on a CPU-only machine
a plain single-process strategy (pass `strategy=` to use another, e.g. in tests).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.tensorboard import _TENSORBOARD_AVAILABLE
from lightning.pytorch.strategies import DeepSpeedStrategy, Strategy

from monailabel_app.core.json_files import write_json_atomically
from monailabel_app.data.sample import GroundingSample
from monailabel_app.training.config import PRESETS, GRPOConfig, parse_overrides
from monailabel_app.training.control import PROGRESS_FILE, TrainingControl
from monailabel_app.training.export import export_reasoner
from monailabel_app.training.module import GRPOModule, RewardFunction
from monailabel_app.training.run_records import RESULT_FILE

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
MODEL_DIR = "reasoner"
CONFIG_FILE = "grpo_config.yaml"


def resolve_precision(precision: str, accelerator: str) -> str:
    if precision != "auto":
        return precision
    return "bf16-mixed" if accelerator == "gpu" else "32-true"


def deepspeed_config(config: GRPOConfig) -> dict:
    """DeepSpeed settings from ours; Lightning adds the precision section.

    `managed_gradient_accumulation: false` lets the module own the update boundary: it backpropagates any number of
    micro-batches and then steps, instead of DeepSpeed counting micro-steps.
    """
    zero = {"stage": config.zero_stage}
    if config.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if config.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # torch's AdamW
        "gradient_clipping": config.grad_clip,
        "managed_gradient_accumulation": False,
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
    }


def deepspeed_strategy_arguments(config: GRPOConfig) -> dict:
    """Keyword arguments of Lightning's DeepSpeedStrategy for this config (tests reuse them on CPU)."""
    # Frozen weights (the base under LoRA, the reference copy) are rebuilt from the model folder on resume.
    return {"config": deepspeed_config(config), "exclude_frozen_parameters": True}


def default_strategy(config: GRPOConfig, accelerator: str) -> Union[Strategy, str]:
    """DeepSpeed on GPUs; on CPU one process, or DDP over gloo with `devices` > 1 (tests run several ranks so)."""
    if accelerator == "gpu":
        return DeepSpeedStrategy(**deepspeed_strategy_arguments(config))
    return "ddp" if cpu_processes(config) > 1 else "auto"


def cpu_processes(config: GRPOConfig) -> int:
    """On CPU `devices` counts processes; -1 (all GPUs) means one."""
    return config.devices if config.devices > 0 else 1


def build_trainer(
    config: GRPOConfig,
    total_steps: int,
    output_dir: Path,
    callbacks: list[pl.Callback],
    accelerator: str,
    strategy: Union[Strategy, str],
) -> pl.Trainer:
    """Runs until `total_steps` GRPO steps are done (Lightning counts optimiser updates: `updates_per_step` each)."""
    updates = config.updates_per_step
    checkpoints = ModelCheckpoint(
        dirpath=output_dir / CHECKPOINT_DIR,
        save_last=True,
        save_top_k=0,
        every_n_train_steps=config.save_every_steps * updates,  # Lightning counts optimiser updates
    )
    if config.progress_bar:  # plain text: readable in a log file too, and it counts steps, not Lightning epochs
        callbacks = [*callbacks, TQDMProgressBar()]
    loggers = [CSVLogger(output_dir, name="logs")]
    if _TENSORBOARD_AVAILABLE:
        loggers.append(TensorBoardLogger(output_dir, name="tensorboard"))
    return pl.Trainer(
        accelerator=accelerator,
        devices=config.devices if accelerator == "gpu" else cpu_processes(config),
        num_nodes=config.num_nodes,
        strategy=strategy,
        precision=config.precision,
        max_epochs=-1,  # the data epochs are the sampler's business; a stopped run resumes mid-epoch either way
        max_steps=total_steps * updates,
        logger=loggers,
        callbacks=[*callbacks, checkpoints],
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=1,
        use_distributed_sampler=False,  # the module's sampler splits prompts over ranks itself
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=output_dir,
    )


def train_reasoner(
    samples: Iterable[GroundingSample],
    config: GRPOConfig,
    model_path: str | Path,
    output_dir: str | Path,
    *,
    resume: bool = False,
    reward_fn: Optional[RewardFunction] = None,
    stop_event: Optional[threading.Event] = None,
    stop_file: Optional[str | Path] = None,
    on_progress: Optional[Callable[[dict], None]] = None,
    strategy: Union[Strategy, str, None] = None,
    allow_download: bool = False,
) -> dict:
    """Trains, saves the reasoner to `output_dir/reasoner`, returns the result dict (see the module docstring)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RESULT_FILE).unlink(missing_ok=True)  # present again only once this run has ended
    started = time.perf_counter()
    last_checkpoint = output_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    resumed_from = str(last_checkpoint) if resume and last_checkpoint.exists() else None
    try:
        samples = samples if isinstance(samples, Sequence) else list(samples)  # an iterator is read once, here
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
        config = config.replace(precision=resolve_precision(config.precision, accelerator))
        total = config.total_steps(len(samples))
        if total < 1:
            raise ValueError(f"{len(samples)} samples give no full GRPO step of {config.prompts_per_step} prompts")
        pl.seed_everything(config.seed, workers=True)
        config.save(output_dir / CONFIG_FILE)
        module = GRPOModule(config, str(model_path), samples, reward_fn=reward_fn, allow_download=allow_download)
        control = TrainingControl(total, output_dir / PROGRESS_FILE, on_progress, stop_event, stop_file)
        strategy = strategy if strategy is not None else default_strategy(config, accelerator)
        trainer = build_trainer(config, total, output_dir, [control], accelerator, strategy)
        with warnings.catch_warnings():
            # The prompt sampler resumes mid-epoch from the restored step count, which Lightning can't see.
            warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
            # Checkpoints are meant to hold the state after the step's updates.
            warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
            trainer.fit(module, ckpt_path=resumed_from)
        trainer.save_checkpoint(last_checkpoint, weights_only=False)  # the final state too: a later run can extend it
        model_dir = export_reasoner(module, trainer, output_dir / MODEL_DIR)
    except BaseException as error:
        write_failure(output_dir, error, started)
        raise

    curve = control.reward_curve
    result = {
        "status": "stopped" if control.stopped_early else "completed",
        "steps_done": module.steps_done,
        "total_steps": total,
        "mean_reward_first": curve[0] if curve else None,
        "mean_reward_last": curve[-1] if curve else None,
        "reward_curve": curve,
        "model_dir": str(model_dir),
        "checkpoint": str(last_checkpoint),
        "resumed_from": resumed_from,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if trainer.is_global_zero:
        write_json_atomically(output_dir / RESULT_FILE, result)
    return result


def write_failure(output_dir: Path, error: BaseException, started: float) -> None:
    write_json_atomically(
        output_dir / RESULT_FILE,
        {
            "status": "failed",
            "error": f"{type(error).__name__}: {error}",
            "traceback": "".join(traceback.format_exception(error)),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )


def load_config(name_or_path: str, overrides: Sequence[str] = ()) -> GRPOConfig:
    base = PRESETS[name_or_path] if name_or_path in PRESETS else GRPOConfig.load(name_or_path)
    return GRPOConfig.from_dict(base.to_dict() | parse_overrides(list(overrides)))

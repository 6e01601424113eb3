"""The trained policy as a standalone Hugging Face folder that the inference code (`TransformersReasoner`) loads.

LoRA adapters are merged into the base weights, so the folder is an ordinary Qwen2.5-VL checkpoint. Under ZeRO-3 the
parameters are sharded over GPUs and are gathered first (every rank must take part; rank 0 writes). The folder is
written beside its destination and renamed into place, so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.strategies import DeepSpeedStrategy

from monailabel_app.reasoning.identity import TINY_MODEL_MARKER


def export_reasoner(module: pl.LightningModule, trainer: pl.Trainer, out_dir: str | Path) -> Path:
    """Writes `module.policy` (merged) and `module.processor` to `out_dir`; call on every rank, after training.

    The module is not trainable afterwards: merging LoRA replaces its adapter layers in place.
    """
    out_dir = Path(out_dir)
    strategy = trainer.strategy
    gathered = nullcontext()
    if isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3:
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(list(module.policy.parameters()))
    with gathered:
        if trainer.is_global_zero:
            _write(module, out_dir)
    strategy.barrier("export_reasoner")
    return out_dir


def _write(module: pl.LightningModule, out_dir: Path) -> None:
    model = module.policy.merge_and_unload() if hasattr(module.policy, "merge_and_unload") else module.policy
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    module.processor.save_pretrained(staging)
    marker = Path(module.model_path) / TINY_MODEL_MARKER  # a retrained toy is still a toy
    if marker.exists():
        shutil.copy2(marker, staging / TINY_MODEL_MARKER)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)

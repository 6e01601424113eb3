"""Lightning's DeepSpeedStrategy, allowed to run on CPU so that tests exercise the same strategy as GPU training.

Lightning refuses DeepSpeed on anything but CUDA, although DeepSpeed itself runs ZeRO 0-3 on its CPU accelerator
(gloo for communication). This subclass only lifts Lightning's guards: no CUDA check, a CPU root device with index 0
(DeepSpeed reads the device index as its rank's device), no check that device indices match local ranks (CPU devices
have none). Test support only: a product run on CPU has no reason to pay for DeepSpeed.
"""

from __future__ import annotations

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    @property
    def root_device(self) -> torch.device:
        return torch.device("cpu", 0)

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # DeepSpeedStrategy's own version only adds the CUDA-only check

    def setup_distributed(self) -> None:
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()


def cpu_deepspeed_strategy(config) -> CPUDeepSpeedStrategy:
    """The strategy `train.py` would build on GPUs for this GRPOConfig, on CPU."""
    from monailabel_app.training.run import deepspeed_strategy_arguments

    return CPUDeepSpeedStrategy(**deepspeed_strategy_arguments(config))

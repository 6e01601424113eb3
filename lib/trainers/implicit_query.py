"""MONAI Label train task `implicit_query`: GRPO on the final labels users saved, then publish the reasoner.

MONAI Label runs it in a subprocess (`POST /train/implicit_query`, body = these options); a second request while one
runs gets MONAI Label's 429; `DELETE /train/` stops it, and a stopped or failed run publishes nothing. The options
start from the one-GPU hospital preset (LoRA, small groups); `preset` = `paper` starts from the paper's settings.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from monailabel_app.datastore_samples import final_label_entries
from monailabel_app.grpo_config import HOSPITAL_PRESET, PAPER_PRESET, REWARD_MODES
from monailabel_app.retraining import last_training_stats, retrain_reasoner
from monailabel_app.settings import parse_bool

logger = logging.getLogger(__name__)

# option shown in Slicer/OHIF -> GRPOConfig field (and how to read the string a client may send)
OPTIONS: Dict[str, tuple[str, Callable[[Any], Any]]] = {
    "max_steps": ("max_steps", int),
    "epochs": ("epochs", int),
    "group_size": ("group_size", int),
    "prompts_per_step": ("prompts_per_step", int),
    "lora": ("lora", lambda v: parse_bool("lora", str(v))),
    "learning_rate": ("lr", float),
    "kl_coef": ("kl_coef", float),
    "reward_mode": ("reward_mode", str),
    "max_response_tokens": ("max_response_tokens", int),
    "temperature": ("temperature", float),
}


class ImplicitQueryTrainer(TrainTask):
    def __init__(self, model_dir: str, base_reasoner: Callable[[], str], conf: Dict[str, str]):
        super().__init__("GRPO retraining of the reasoner from saved final labels (questions kept in label info)")
        self.model_dir = model_dir
        self.base_reasoner = base_reasoner  # the reasoner now served: the last published one, else --conf reasoner
        self.site_defaults = {k[len("train_") :]: v for k, v in conf.items() if k.startswith("train_")}

    def config(self) -> Dict[str, Any]:
        """The options Slicer/OHIF show; `--conf train_<option> value` sets a site's default (also for auto-retrain)."""
        options = self._builtin_options()
        for key, value in self.site_defaults.items():
            if key not in options:
                raise ValueError(f"--conf train_{key}: no such train option; options: {', '.join(options)}")
            default = options[key]
            if isinstance(default, list):
                options[key] = [value] + [choice for choice in default if choice != value]
            else:
                options[key] = OPTIONS[key][1](value)
        return options

    def _builtin_options(self) -> Dict[str, Any]:
        preset = HOSPITAL_PRESET
        return {
            "preset": ["hospital", "paper"],
            "max_steps": 20,
            "epochs": 5,  # a few saved labels make short epochs; max_steps bounds the run
            "group_size": preset.group_size,
            "prompts_per_step": preset.prompts_per_step,
            "lora": preset.lora,
            "learning_rate": preset.lr,
            "kl_coef": preset.kl_coef,
            "reward_mode": list(REWARD_MODES),
            "max_response_tokens": 512,
            "temperature": preset.temperature,
        }

    def stats(self) -> Dict[str, Any]:
        return last_training_stats(self.model_dir)

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        options = {k: v[0] if isinstance(v, list) else v for k, v in self.config().items()}
        options.update({k: v for k, v in request.items() if k in options})
        preset = PAPER_PRESET if options.pop("preset") == "paper" else HOSPITAL_PRESET
        changes = {field: read(options[key]) for key, (field, read) in OPTIONS.items()}
        config = preset.replace(**changes, mini_batch_prompts=changes["prompts_per_step"], progress_bar=False)
        entries = final_label_entries(datastore)
        logger.info(f"GRPO retraining on {len(entries)} final labels from {self.base_reasoner()}: {config}")
        return retrain_reasoner(entries, self.base_reasoner(), self.model_dir, config)


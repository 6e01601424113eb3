"""The decoding settings every reasoner backend is given explicitly: no server or checkpoint default decides silently.

Greedy unless told otherwise (the paper evaluates greedily). `repetition_penalty` is the one exception to "always
explicit": None means the checkpoint's own `generation_config.json` value, which is what transformers' `generate`
applies (Qwen2.5-VL checkpoints ship 1.05, and the paper's numbers were produced that way). The in-process vLLM backend
reads that value and passes it on; an OpenAI-compatible endpoint is sent a penalty only when one is set, because hosted
APIs reject the field (vLLM's server accepts it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

MAX_CONFIDENCE_SAMPLES = 16  # sampled answers per question for a confidence: more cost more than the estimate gains


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 1024  # sent as the API's `max_tokens`
    seed: Optional[int] = None
    repetition_penalty: Optional[float] = None  # None: the checkpoint's generation_config value

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise ValueError(f"invalid sampling settings: {self}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def chat_completion_fields(self) -> dict:
        """The OpenAI chat-completions fields: temperature, top_p and max_tokens always; seed and penalty when set."""
        fields = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_new_tokens}
        if self.seed is not None:
            fields["seed"] = self.seed
        if self.repetition_penalty is not None:
            fields["repetition_penalty"] = self.repetition_penalty
        return fields

    def to_json(self) -> dict:
        return asdict(self)

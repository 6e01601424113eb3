"""The reasoner backends, in one registry as the segmenters are in theirs (`segmentation/factory.py`): the server, the
evaluation, the OpenAI-compatible endpoint and training's greedy check all build a reasoner here, by the backend's
name, so a new backend is one entry, and every command offers the same ones.

- `transformers`: the checkpoint loaded in this process (CPU or GPU), `generate`.
- `vllm`: the checkpoint in an in-process vLLM engine (GPU; vLLM installed beside this app).
- `openai`: a chat-completions endpoint that serves the model (`vllm serve`, `python -m monailabel_app.serve`); the
  weights are elsewhere, so there is no digest here and nothing published is swapped in.
Each module is imported when its backend is built: naming the backends loads no model library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

from monailabel_app.core.errors import RequestError
from monailabel_app.reasoning.reasoner import Reasoner
from monailabel_app.reasoning.sampling import SamplingSettings


@dataclass(frozen=True)
class ReasonerSpec:
    """What a backend needs to build a reasoner; each backend reads the fields that apply to it."""

    model: str  # a checkpoint folder or hub id; for `openai`, the name the endpoint serves
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    device: str = "auto"
    min_pixels: Optional[int] = None  # the model's frame bounds; None: the checkpoint's (or the app's defaults)
    max_pixels: Optional[int] = None
    allow_download: bool = False
    url: Optional[str] = None  # openai: the endpoint's base URL
    api_key_env: Optional[str] = None  # openai: the environment variable holding its key
    concurrency: int = 4  # openai: requests in flight
    retries: int = 3
    timeout_s: float = 300.0
    vllm_engine: Dict[str, object] = field(default_factory=dict)  # vllm: max_model_len, gpu_memory_utilization, ...


@dataclass(frozen=True)
class ReasonerBackend:
    name: str
    weights_here: bool  # loads the weights in this process: a digest to record, a published retrained one to serve
    build: Callable[[ReasonerSpec], Reasoner]


def _transformers(spec: ReasonerSpec) -> Reasoner:
    from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner

    return TransformersReasoner(
        spec.model,
        device=spec.device,
        max_new_tokens=spec.sampling.max_new_tokens,
        min_pixels=spec.min_pixels,
        max_pixels=spec.max_pixels,
        allow_download=spec.allow_download,
    )


def _vllm(spec: ReasonerSpec) -> Reasoner:
    from monailabel_app.reasoning.vllm_reasoner import VllmReasoner

    return VllmReasoner(
        spec.model, spec.sampling, min_pixels=spec.min_pixels, max_pixels=spec.max_pixels, **spec.vllm_engine
    )


def _openai(spec: ReasonerSpec) -> Reasoner:
    from monailabel_app.reasoning.openai_reasoner import DEFAULT_API_KEY_ENV, OpenAIReasoner

    if not spec.url:
        raise RequestError("the openai backend needs the endpoint's base URL (e.g. http://gpu-host:8001/v1)")
    bounds = {key: value for key, value in (("min_pixels", spec.min_pixels), ("max_pixels", spec.max_pixels)) if value}
    return OpenAIReasoner(
        spec.url,
        spec.model,
        api_key_env=spec.api_key_env or DEFAULT_API_KEY_ENV,
        sampling=spec.sampling,
        max_concurrency=spec.concurrency,
        retries=spec.retries,
        timeout_s=spec.timeout_s,
        **bounds,
    )


BACKENDS: Dict[str, ReasonerBackend] = {
    backend.name: backend
    for backend in (
        ReasonerBackend("transformers", True, _transformers),
        ReasonerBackend("vllm", True, _vllm),
        ReasonerBackend("openai", False, _openai),
    )
}
BACKEND_NAMES = tuple(BACKENDS)


def backend(name: str) -> ReasonerBackend:
    if name not in BACKENDS:
        raise RequestError(f"unknown reasoner backend {name!r}: one of {', '.join(BACKEND_NAMES)}")
    return BACKENDS[name]


def build_reasoner(name: str, spec: ReasonerSpec) -> Reasoner:
    """The reasoner of backend `name` for `spec`; models load here."""
    return backend(name).build(spec)

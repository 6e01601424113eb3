"""Segmenter weights files: where the app is told of them, and loading them safely (never unpickling code).

Shared by every segmenter family (`factory.py` for SAM/MedSAM/LiteMedSAM, `sam2.py` for SAM2.1/MedSAM2), so neither
imports the other.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch.nn.modules.module import register_module_parameter_registration_hook

from monailabel_app.core.errors import UnavailableError

CHECKPOINT_OPTION = "segmenter_checkpoint"  # app option that points at the weights file


class SegmenterUnavailableError(UnavailableError):
    """The configured segmenter cannot be built here; the message says which file to get and which option to set."""


@contextmanager
def parameters_without_values() -> Iterator[None]:
    """Parameters made in this block, on this thread, are placeholders without storage (torch's meta device): their
    random initialisation, which the checkpoint overwrites anyway, costs nothing (LiteMedSAM: most of its build).
    `load_weights` then gives them storage of their own and copies the checkpoint in. Buffers stay
    real: those the checkpoint lacks (index tables, pixel mean and std) are computed as usual. This thread only: the
    models load on a thread of their own while the server serves (accelerate's `init_empty_weights` changes nn.Module
    for all)."""
    builder = threading.get_ident()

    def placeholder(module: torch.nn.Module, name: str, param: torch.nn.Parameter):
        if threading.get_ident() != builder:
            return None
        return torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    handle = register_module_parameter_registration_hook(placeholder)
    try:
        yield
    finally:
        handle.remove()


def load_weights(model: torch.nn.Module, weights: Path, kind: str, how_to_get: str) -> None:
    """Strict load on CPU; any failure becomes one actionable SegmenterUnavailableError. A model built in
    `parameters_without_values` gets storage for its placeholders first."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state:  # training checkpoints (e.g. medsam-lite-train) wrap it
            state = state["model"]
        _give_placeholders_storage(model)
        model.load_state_dict(state, strict=True)  # a weight the file lacks fails here, placeholder or not
    except Exception as error:
        raise SegmenterUnavailableError(
            f"cannot load {weights} as {kind} segmenter weights ({type(error).__name__}: {str(error)[:300]}); "
            f"{how_to_get}; set the '{CHECKPOINT_OPTION}' option to its path"
        ) from error


def _give_placeholders_storage(model: torch.nn.Module) -> None:
    """Uninitialised CPU storage of the model's own for each placeholder, which the load then copies into. The
    checkpoint's tensors are not taken as they are (`assign`): kept in the file's layout they made LiteMedSAM's
    decoder and the server's throughput about 10 % slower (benchmarks/README.md, server_latency)."""
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_meta:
                storage = torch.empty_like(param, device="cpu")
                module._parameters[name] = torch.nn.Parameter(storage, requires_grad=param.requires_grad)


def require_file(kind: str, weights: Path, how_to_get: str) -> None:
    """Checked before building the network, so a missing file fails before any work."""
    if not weights.is_file():
        raise SegmenterUnavailableError(
            f"{kind} segmenter weights not found at {weights}: {how_to_get}; set the '{CHECKPOINT_OPTION}' option "
            "to its path"
        )

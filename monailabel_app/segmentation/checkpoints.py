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
    `load_weights(..., assign=True)` then puts the checkpoint's tensors in their place. Buffers stay real: those the
    checkpoint lacks (index tables, pixel mean and std) are computed as usual. This thread only: the models load on a
    thread of their own while the server serves (accelerate's `init_empty_weights` changes nn.Module for all)."""
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


def load_weights(model: torch.nn.Module, weights: Path, kind: str, how_to_get: str, assign: bool = False) -> None:
    """Strict load on CPU; any failure becomes one actionable SegmenterUnavailableError. `assign`: the checkpoint's
    tensors become the model's (in the model's dtypes), for a model built in `parameters_without_values`."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state:  # training checkpoints (e.g. medsam-lite-train) wrap it
            state = state["model"]
        if assign:  # what copying into the model's tensors did: the model's dtype, whatever the file holds
            expected = model.state_dict()
            state = {k: v.to(expected[k].dtype) if k in expected else v for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=assign)
        placeholders = [name for name, param in model.named_parameters() if param.is_meta]
        if placeholders:
            raise ValueError(f"no weights for {', '.join(placeholders[:5])}")
    except Exception as error:
        raise SegmenterUnavailableError(
            f"cannot load {weights} as {kind} segmenter weights ({type(error).__name__}: {str(error)[:300]}); "
            f"{how_to_get}; set the '{CHECKPOINT_OPTION}' option to its path"
        ) from error


def require_file(kind: str, weights: Path, how_to_get: str) -> None:
    """Checked before building the network, so a missing file fails before any work."""
    if not weights.is_file():
        raise SegmenterUnavailableError(
            f"{kind} segmenter weights not found at {weights}: {how_to_get}; set the '{CHECKPOINT_OPTION}' option "
            "to its path"
        )

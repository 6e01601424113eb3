"""Segmenter weights files: where the app is told of them, and loading them safely (never unpickling code).

Shared by every segmenter family (`factory.py` for SAM/MedSAM/LiteMedSAM, `sam2.py` for SAM2.1/MedSAM2), so neither
imports the other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from monailabel_app.core.errors import UnavailableError

CHECKPOINT_OPTION = "segmenter_checkpoint"  # app option that points at the weights file


class SegmenterUnavailableError(UnavailableError):
    """The configured segmenter cannot be built here; the message says which file to get and which option to set."""


def load_weights(model: torch.nn.Module, weights: Path, kind: str, how_to_get: str) -> None:
    """Strict load on CPU; any failure becomes one actionable SegmenterUnavailableError."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state:  # training checkpoints (e.g. medsam-lite-train) wrap it
            state = state["model"]
        model.load_state_dict(state, strict=True)
    except Exception as error:
        raise SegmenterUnavailableError(
            f"cannot load {weights} as {kind} segmenter weights ({type(error).__name__}: {str(error)[:300]}); "
            f"{how_to_get}; set the '{CHECKPOINT_OPTION}' option to its path"
        ) from error


def require_file(kind: str, weights: Path, how_to_get: str) -> None:
    """Checked before building the network: ViT-H alone allocates ~2.5 GB of random weights first."""
    if not weights.is_file():
        raise SegmenterUnavailableError(
            f"{kind} segmenter weights not found at {weights}: {how_to_get}; set the '{CHECKPOINT_OPTION}' option "
            "to its path"
        )

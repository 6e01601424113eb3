"""Intensities to the 8-bit RGB picture the reasoner and the segmenter look at.

CT/MR values are windowed; a radiologist picks the window as in a viewer. `auto` keeps 8-bit pictures as they are and
stretches anything else between its 0.5th and 99.5th percentiles, which suits MR and unknown CT protocols.
"""

from __future__ import annotations

import numpy as np

from monailabel_app.core.errors import RequestError

# (level, width) in Hounsfield units, the usual viewer presets
CT_WINDOWS = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 160.0),
}
WINDOW_CHOICES = ["auto", *CT_WINDOWS, "minmax"]


class InvalidWindowError(RequestError):
    """Unknown window name or a malformed 'level,width' pair."""


def window_bounds(pixels: np.ndarray, window: str) -> tuple[float, float]:
    """The (low, high) intensities that map to 0 and 255."""
    window = (window or "auto").strip().lower()
    if window in CT_WINDOWS:
        level, width = CT_WINDOWS[window]
    elif window == "auto":
        low, high = np.nanpercentile(pixels, [0.5, 99.5])
        return float(low), float(high)
    elif window == "minmax":
        return float(np.nanmin(pixels)), float(np.nanmax(pixels))
    else:
        try:
            level, width = (float(v) for v in window.split(","))
        except ValueError:
            raise InvalidWindowError(
                f"Unknown window {window!r}: use one of {', '.join(WINDOW_CHOICES)} or 'level,width' such as '40,400'."
            ) from None
        if not width > 0:
            raise InvalidWindowError(f"The window width must be positive, got {width:g}.")
    return level - width / 2, level + width / 2


def to_display_rgb(pixels: np.ndarray, window: str = "auto") -> np.ndarray:
    """(H, W) or (H, W, 3) of any dtype -> (H, W, 3) uint8."""
    if pixels.dtype == np.uint8 and (window or "auto").strip().lower() == "auto":
        grey_or_rgb = pixels
    else:
        low, high = window_bounds(pixels, window)
        scaled = (pixels.astype(np.float32) - low) / max(high - low, 1e-6)
        grey_or_rgb = (np.clip(np.nan_to_num(scaled), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if grey_or_rgb.ndim == 2:
        grey_or_rgb = np.repeat(grey_or_rgb[..., None], 3, axis=-1)
    return np.ascontiguousarray(grey_or_rgb)

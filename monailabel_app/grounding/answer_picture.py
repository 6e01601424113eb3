"""The picture of an answer, as the model saw it, with what it answered drawn on it: the mask tinted, the box outlined,
the two key points marked. The answers page and the audit trail show it; nobody has to open a viewer to see what the
model did.
"""

from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

MASK_TINT = (255, 64, 64)
BOX_COLOUR = (64, 200, 255)
POINT_COLOURS = ((255, 220, 0), (120, 255, 120))
MAX_SIDE = 768  # the page shows pictures at most this wide; larger frames are scaled down (the file stays small)


def draw_answer(
    picture: np.ndarray,
    mask: Optional[np.ndarray] = None,
    box: Optional[Sequence[float]] = None,
    points: Optional[Sequence[Sequence[float]]] = None,
) -> bytes:
    """PNG bytes of `picture` (H, W, 3 uint8) with the mask tinted, the box and the points in picture pixels."""
    rgb = np.asarray(picture, dtype=np.uint8)
    if mask is not None and mask.shape == rgb.shape[:2] and mask.any():
        tinted = rgb.astype(np.float32)
        tinted[mask] = 0.55 * tinted[mask] + 0.45 * np.asarray(MASK_TINT, np.float32)
        rgb = tinted.astype(np.uint8)
    image = Image.fromarray(rgb, "RGB")
    scale = min(1.0, MAX_SIDE / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 200))
    if box is not None and len(box) == 4:
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=BOX_COLOUR, width=width)
    for index, point in enumerate(points or []):
        if len(point) < 2:
            continue
        x, y, radius = float(point[0]) * scale, float(point[1]) * scale, 2 * width + 2
        colour = POINT_COLOURS[index % len(POINT_COLOURS)]
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=(0, 0, 0), fill=colour, width=1)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()

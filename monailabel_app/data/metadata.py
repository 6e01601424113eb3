"""What a record says about a sample (id, categories, ground truth), read tolerantly across data-set spellings.

Keys are matched after lower-casing and dropping everything but letters and digits, so "supercategory",
"super_category", "super-category" and "SuperCategory" are one key.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping, Optional

UNKNOWN = "unknown"


def normalise_key(key: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


def find_value(record: Optional[Mapping], *names: str) -> Any:
    """The first non-empty value under any of `names` (normalised); None when there is none."""
    if not isinstance(record, Mapping):
        return None
    by_key = {normalise_key(key): value for key, value in record.items()}
    for name in names:
        value = by_key.get(normalise_key(name))
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


def categories(*records: Optional[Mapping]) -> dict:
    """modality, supercategory and category from the first record that has each; "unknown" otherwise."""
    wanted = {
        "modality": ("modality", "image_modality"),
        "supercategory": ("supercategory",),
        "category": ("category",),
    }
    found = {}
    for field_name, names in wanted.items():
        values = (find_value(record, *names) for record in records)
        found[field_name] = str(next((value for value in values if value is not None), UNKNOWN)).strip()
    return found


def parse_ground_truth(value: object) -> Optional[dict]:
    """{"bbox_2d": [x1, y1, x2, y2], "point_2d": [[x, y], [x, y]]} from a dict or its JSON string; None if malformed."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, Mapping):
        return None
    box, points = find_value(value, "bbox_2d", "bbox"), find_value(value, "point_2d", "points")
    if not (_is_numbers(box, 4) and isinstance(points, (list, tuple)) and len(points) == 2):
        return None
    if not all(_is_numbers(point, 2) for point in points):
        return None
    return {"bbox_2d": list(box), "point_2d": [list(point) for point in points]}


def _is_numbers(value: object, length: int) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == length
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )

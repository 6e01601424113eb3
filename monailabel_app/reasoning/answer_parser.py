"""Turns the reasoner's raw text into one box and two points, or a reason why it can't. Never raises.

What is accepted, deliberately (docs/method.md §2: what models emit):
- the answer is the first `<answer>…</answer>` block (a missing closing tag is tolerated, since generation may stop at
  the token limit); only when the text has no `<answer>` tag at all, the first JSON object in the whole text is used, so
  baselines that answer with bare or fenced JSON can still be scored;
- code fences, text around the object, single-quoted (Python-style) dicts;
- keys `bbox` or `bbox_2d`; points as `points_1` + `points_2`, or a two-point list under `point_2d` or `points`;
- ints and floats; not booleans, strings, NaN or infinities;
- a box with swapped corners is reordered, and coordinates outside the image are clamped to it (both noted in
  `warnings`); a box with no area left after that is rejected, as are points that aren't two numbers each.

"Not in this image": an answer object whose `found` is JSON `false` (`{'found': false}`, what the opt-in `abstain`
template asks for) says the target is absent: `absent` is True, whatever else the object holds. Any other object is
read as above, so the released checkpoints' answers (which never hold `found`) mean what they always meant.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

BOX_KEYS = ("bbox", "bbox_2d")
POINT_LIST_KEYS = ("point_2d", "points")
MAX_OBJECT_STARTS = 64


@dataclass
class ParsedAnswer:
    """Coordinates are in the frame the model saw, already ordered and clamped to `width` x `height`."""

    ok: bool
    think: Optional[str] = None
    box: Optional[tuple[float, float, float, float]] = None
    points: Optional[list[tuple[float, float]]] = None
    reason: Optional[str] = None
    warnings: list[str] = field(default_factory=list)
    absent: bool = False  # the model says the target is not in this image


ABSENT_REASON = "the model says the target is not in this image"


def parse_answer(text: str, width: float, height: float) -> ParsedAnswer:
    """Parse `text` for an image of `width` x `height` pixels (the model's frame)."""
    if not isinstance(text, str):
        return ParsedAnswer(ok=False, reason="the reasoner returned no text")
    think = think_block(text)
    try:
        obj, source_note = _find_answer_object(text)
    except ValueError as error:
        return ParsedAnswer(ok=False, think=think, reason=str(error))
    result = ParsedAnswer(ok=False, think=think)
    if source_note:
        result.warnings.append(source_note)
    if obj.get("found") is False:
        result.absent, result.reason = True, ABSENT_REASON
        return result
    try:
        box = _read_box(obj)
        points = _read_points(obj)
    except ValueError as error:
        result.reason = str(error)
        return result
    result.box = _order_and_clamp_box(box, width, height, result.warnings)
    result.points = [_clamp_point(p, width, height, result.warnings) for p in points]
    x1, y1, x2, y2 = result.box
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        result.reason = f"the box {list(box)} has no area inside the {width:g}x{height:g} image"
        return result
    result.ok = True
    return result


def says_absent(text: object) -> bool:
    """Whether an answer is the "not in this image" form; coordinates don't matter for that."""
    return isinstance(text, str) and parse_answer(text, 1e9, 1e9).absent


def think_block(text: str) -> Optional[str]:
    """The first `<think>…</think>` body, stripped, or None; what `re.search(r"<think>(.*?)</think>", DOTALL)` gives,
    found with two `str.find` calls: linear, where the regex is quadratic on many unclosed `<think>` tags."""
    start = text.find("<think>")
    if start == -1:
        return None
    end = text.find("</think>", start + len("<think>"))
    return text[start + len("<think>") : end].strip() if end != -1 else None


def answer_block(text: str) -> Optional[str]:
    """The body of the first `<answer>` up to `</answer>` or the end of the text (generation may stop mid-answer)."""
    start = text.find("<answer>")
    if start == -1:
        return None
    body_start = start + len("<answer>")
    end = text.find("</answer>", body_start)
    return text[body_start:end] if end != -1 else text[body_start:]


def _find_answer_object(text: str) -> tuple[dict, Optional[str]]:
    body = answer_block(text)
    note = None
    if body is None:
        body, note = text, "no <answer> block; used the first JSON object in the text"
    obj = _first_object(body)
    if obj is None:
        raise ValueError("no <answer> block with a JSON object" if note else "the <answer> block holds no JSON object")
    return obj, note


def _first_object(body: str) -> Optional[dict]:
    """The first `{…}` that decodes as a JSON object, as written or with single quotes made double (the reference's
    normalisation). `raw_decode` ignores trailing text; the number of tries is bounded, so garbage stays cheap."""
    decoder = json.JSONDecoder()
    for variant in (body, body.replace("'", '"')):
        start = variant.find("{")
        for _ in range(MAX_OBJECT_STARTS):
            if start == -1:
                break
            try:
                value, _end = decoder.raw_decode(variant, start)
            except (ValueError, RecursionError):
                value = None
            if isinstance(value, dict):
                return value
            start = variant.find("{", start + 1)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value: Any, count: int, what: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != count or not all(_is_number(v) for v in value):
        raise ValueError(f"{what} is not a list of {count} finite numbers: {value!r}"[:300])
    return [float(v) for v in value]


def _read_box(obj: dict) -> list[float]:
    for key in BOX_KEYS:
        if key in obj:
            return _numbers(obj[key], 4, f"'{key}'")
    raise ValueError(f"the answer has no box (one of {', '.join(BOX_KEYS)}); keys: {sorted(map(str, obj))}"[:300])


def _read_points(obj: dict) -> list[list[float]]:
    if "points_1" in obj or "points_2" in obj:
        return [_numbers(obj.get("points_1"), 2, "'points_1'"), _numbers(obj.get("points_2"), 2, "'points_2'")]
    for key in POINT_LIST_KEYS:
        if key in obj:
            pair = obj[key]
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"'{key}' is not a list of two points: {pair!r}"[:300])
            return [_numbers(p, 2, f"a point of '{key}'") for p in pair]
    raise ValueError("the answer has no key points ('points_1' and 'points_2')")


def _order_and_clamp_box(box: list[float], width: float, height: float, warnings: list[str]) -> tuple:
    x1, y1, x2, y2 = box
    if x1 > x2 or y1 > y2:
        warnings.append("box corners were swapped and have been reordered")
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
    clamped = (_clip(x1, width), _clip(y1, height), _clip(x2, width), _clip(y2, height))
    if clamped != (x1, y1, x2, y2):
        warnings.append("box reached outside the image and was clamped to it")
    return clamped


def _clamp_point(point: list[float], width: float, height: float, warnings: list[str]) -> tuple[float, float]:
    x, y = point
    clamped = (_clip(x, width), _clip(y, height))
    if clamped != (x, y):
        warnings.append(f"point {[x, y]} lay outside the image and was clamped to it")
    return clamped


def _clip(value: float, limit: float) -> float:
    return min(max(value, 0.0), float(limit))

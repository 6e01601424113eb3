"""The answer parsing of the paper's released evaluation (PRIS-CV/MedReasoner `eval/utils.py`): its numbers reproduce.

Strict where the app's `answer_parser` is lenient, on purpose: the published table (ours, and every baseline in it)
was scored this way, and a lenient parser raises baselines that wrap their JSON in code fences or use other keys.
- the answer is the first `<answer>` `{…}` `</answer>` with only whitespace between the braces and the tags
  (regex `<answer>\\s*({.*?})\\s*</answer>`, non-greedy, across lines); code fences or prose inside the block fail;
- every `'` becomes `"` before the object is decoded (trailing text after the object is ignored);
- keys `bbox`, `points_1`, `points_2` only; coordinates are used as given: no reordering, no clamping to the image
  (a box reaching outside the image keeps the larger union in its IoU, as in the reference).
A sample fails as a whole (IoU, pDice and every Dice 0, as in the reference's single try/except) unless the box is
four numbers and both points are two numbers each. "A number" is an int or float, booleans included (Python's
arithmetic accepts them, so the reference did); non-finite values fail here, where the reference would put NaN into
its means, and a point with three coordinates fails here, where the reference's pDice would use the third.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from monailabel_app.reasoning.answer_parser import ParsedAnswer, think_block

REFERENCE_ANSWER_PATTERN = (
    r"<answer>\s*({.*?})\s*</answer>"  # the reference's regex (DOTALL), matched by `answer_object_text`
)


def parse_reference_answer(text: Any) -> ParsedAnswer:
    """Box and points exactly as the model wrote them (its own frame; never reordered or clamped, and `warnings` stays
    empty: nothing is repaired), or the reason the sample fails."""
    if not isinstance(text, str):
        return ParsedAnswer(ok=False, reason="the model returned no text")
    think = think_block(text)
    answer_text = answer_object_text(text)
    if answer_text is None:
        return ParsedAnswer(ok=False, think=think, reason="no <answer>{...}</answer> block")
    try:
        answer, _end = json.JSONDecoder().raw_decode(answer_text.strip().replace("'", '"'))
    except (ValueError, RecursionError):
        return ParsedAnswer(ok=False, think=think, reason="the <answer> object is not JSON")
    box = _numbers(answer.get("bbox"), 4)
    points = [_numbers(answer.get("points_1"), 2), _numbers(answer.get("points_2"), 2)]
    if box is None:
        return ParsedAnswer(ok=False, think=think, reason="'bbox' is not a list of 4 numbers")
    if None in points:
        return ParsedAnswer(ok=False, think=think, reason="'points_1'/'points_2' are not two [x, y] points")
    return ParsedAnswer(ok=True, think=think, box=tuple(box), points=[tuple(p) for p in points])


def answer_object_text(text: str) -> Optional[str]:
    """What `re.search(REFERENCE_ANSWER_PATTERN, text, re.DOTALL).group(1)` gives, in linear time.

    The regex tries each `<answer>` in turn: whitespace, then `{`, then the shortest stretch to a `}` that is followed
    by whitespace and `</answer>`. Only the first `<answer>` whose next non-space character is `{` can match: a later
    one could only close where the first also could. Its match ends at the first `</answer>` whose preceding
    non-space character is a `}` after that `{`. (The regex itself is quadratic on many unclosed `<answer>{` tags.)
    """
    position = text.find("<answer>")
    while position != -1:
        brace = position + len("<answer>")
        while brace < len(text) and text[brace].isspace():
            brace += 1
        if brace < len(text) and text[brace] == "{":
            close = text.find("</answer>", brace + 1)
            while close != -1:
                last = close - 1
                while last > brace and text[last].isspace():
                    last -= 1
                if last > brace and text[last] == "}":
                    return text[brace : last + 1]
                close = text.find("</answer>", close + 1)
            return None
        position = text.find("<answer>", position + 1)
    return None


def _numbers(value: Any, count: int) -> Optional[list[float]]:
    if not isinstance(value, (list, tuple)) or len(value) != count:
        return None
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
        return None
    return [float(v) for v in value]

"""Free text from a request or a model's answer (a question, reasoning, a segment's or model's name) made to fit the
DICOM string VR it is written as, so a hostile or just unusual text can't make a SEG or SR that a PACS or validator
refuses, or that shows something other than what it holds.

- Control characters go: C0 (U+0000-U+001F) except, in the text VRs ST, LT and UT, LF, FF and CR (PS3.5 Table
  6.2-1 allows those and ESC there; TAB, which dciodvfy refuses in them, becomes a space); ESC always, since in DICOM
  it switches character sets (ISO 2022) and our objects declare UTF-8 (`ISO_IR 192`); DEL and the C1 controls
  (U+007F-U+009F); lone surrogates (no UTF-8 encoding exists); and the bidirectional embeddings, overrides and
  isolates (U+202A-U+202E, U+2066-U+2069), which make a viewer show a text other than the one stored. In a one-line
  VR (SH, LO, UC) a line break, tab or form feed becomes a space, and a backslash becomes "/" (there it separates
  values).
- The value is then cut to the VR's limit counted in UTF-8 bytes, the way dciodvfy and many PACS count it (PS3.5
  gives LO's 64 and SH's 16 in characters, but a 64-character LO of "é" is 128 bytes, which they refuse); the cut is
  never inside a character, and a cut value ends in "…" so a reader sees it was shortened.
"""

from __future__ import annotations

import re
from typing import Any

ELLIPSIS = "…"
MAX_BYTES = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10_240, "UT": 2**32 - 2, "UC": 2**32 - 2}  # PS3.5 6.2
TEXT_VRS = frozenset({"ST", "LT", "UT"})  # multi-line, backslash allowed, one value
_BREAKS = "\t\n\v\f\r\x85\u2028\u2029"
_REMOVED = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS_IN_TEXT = re.compile(r"[\v\x85\u2028\u2029]")  # become LF in ST/LT/UT
_BREAKS_IN_ONE_LINE = re.compile(f"[{_BREAKS}]")  # become a space in SH/LO/UC


def clean_text(text: Any, vr: str) -> str:
    """`text` (str() of anything) without the characters `vr` can't hold; not shortened."""
    _check_vr(vr)
    value = _REMOVED.sub("", str(text))
    if vr in TEXT_VRS:
        return _LINE_BREAKS_IN_TEXT.sub("\n", value).replace("\t", " ").rstrip(" ")  # trailing spaces: padding
    return _BREAKS_IN_ONE_LINE.sub(" ", value).replace("\\", "/").strip(" ")


def fit_text(text: Any, vr: str) -> str:
    """`text` cleaned for `vr` and cut to its limit in UTF-8 bytes, at a character boundary, ending in "…" when cut."""
    value = clean_text(text, vr)
    return value if utf8_size(value) <= MAX_BYTES[vr] else clean_text(shorten(value, MAX_BYTES[vr]), vr)


def shorten(text: str, limit: int) -> str:
    """`text` itself when its UTF-8 encoding is at most `limit` bytes, else cut to `limit` bytes ending in "…",
    never inside a character."""
    if len(text) * 4 <= limit or utf8_size(text) <= limit:  # the first test spares encoding a long text
        return text
    room = max(limit - utf8_size(ELLIPSIS), 0)
    return text.encode("utf-8")[:room].decode("utf-8", errors="ignore") + ELLIPSIS  # "ignore" drops a cut character


def utf8_size(text: str) -> int:
    """Bytes of `text` as written under `ISO_IR 192` (what the limits count)."""
    return len(text.encode("utf-8"))


def clean_strings(value: Any, vr: str) -> Any:
    """`value` (JSON-like: dicts, lists, strings, numbers) with every string in it cleaned for `vr`, not cut."""
    if isinstance(value, str):
        return clean_text(value, vr)
    if isinstance(value, dict):
        return {clean_text(key, vr): clean_strings(item, vr) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_strings(item, vr) for item in value]
    return value


def _check_vr(vr: str) -> None:
    if vr not in MAX_BYTES:
        raise ValueError(f"no text rules for VR {vr!r}: one of {', '.join(MAX_BYTES)}")

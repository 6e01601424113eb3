"""What a start option is: a name, the kind of value it takes, its default and one line of help, and the parser
that turns the string MONAI Label hands over into a typed value or one line saying what is allowed.

The parsers raise `OptionError` with a message that names the option and what it accepts: the start prints that
line and stops, before any model loads.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class OptionError(ValueError):
    """A start option that can't be used; the message is one line for the admin."""


Parser = Callable[[str, str], Any]  # (option name, raw text) -> typed value


@dataclass(frozen=True)
class Option:
    name: str
    accepts: str  # what the value may be, as the docs and messages say it
    default: Any  # the typed default (None: none, `shown_default` says what happens then)
    help: str
    parse: Parser
    group: str
    shown_default: Optional[str] = None

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, (tuple, list)):
            return ",".join(map(str, self.default))
        return "" if self.default is None else str(self.default)


def refused(name: str, raw: str, accepts: str) -> OptionError:
    shown = raw if len(raw) <= 60 else raw[:57] + "..."
    return OptionError(f"--conf {name} {shown!r}: {accepts}.")


def flag(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise refused(name, raw, "must be true or false")


def whole(lowest: int, highest: Optional[int] = None, auto: bool = False) -> Parser:
    """A whole number in [lowest, highest]; with `auto`, also the word auto (None)."""

    def parse(name: str, raw: str) -> Optional[int]:
        text = raw.strip()
        if auto and text.lower() == "auto":
            return None
        if re.fullmatch(r"\d+", text) and int(text) >= lowest and (highest is None or int(text) <= highest):
            return int(text)
        upper = f" to {highest:,}" if highest is not None else " or more"
        raise refused(name, raw, f"must be {'auto or ' if auto else ''}a whole number from {lowest:,}{upper}")

    return parse


def number(above: float, at_most: float) -> Parser:
    """A number greater than `above` and at most `at_most`."""

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and above < value <= at_most):
            raise refused(name, raw, f"must be a number above {above:g} and at most {at_most:g}")
        return value

    return parse


def one_of(choices: Sequence[str]) -> Parser:
    def parse(name: str, raw: str) -> str:
        if raw.strip() in choices:
            return raw.strip()
        raise refused(name, raw, f"must be one of {', '.join(choices)}")

    return parse


def text(pattern: str = r"[^\x00-\x1f\x7f]{1,1024}", accepts: str = "must be plain text") -> Parser:
    def parse(name: str, raw: str) -> str:
        if re.fullmatch(pattern, raw.strip()):
            return raw.strip()
        raise refused(name, raw, accepts)

    return parse


def existing_file(name: str, raw: str) -> str:
    path = os.path.expanduser(raw.strip())
    if not os.path.isfile(path):
        raise refused(name, raw, "must name an existing file")
    return path


def folder(name: str, raw: str) -> str:
    """A folder that exists or can be made (its parent exists)."""
    path = os.path.abspath(os.path.expanduser(raw.strip()))
    if os.path.isdir(path) or os.path.isdir(os.path.dirname(path)):
        return path
    raise refused(name, raw, "must be a folder, or a new one in a folder that exists")


def url(name: str, raw: str) -> str:
    if re.fullmatch(r"https?://[^\s]+", raw.strip()):
        return raw.strip().rstrip("/")
    raise refused(name, raw, "must be an http:// or https:// URL")


def listed(item: Parser, accepts: str) -> Parser:
    """A comma-separated list, each item parsed by `item`; duplicates kept once."""

    def parse(name: str, raw: str) -> tuple:
        items = [part.strip() for part in raw.split(",") if part.strip()]
        if not items:
            raise refused(name, raw, accepts)
        return tuple(dict.fromkeys(item(name, part) for part in items))

    return parse

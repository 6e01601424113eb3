"""The reasoner's recorded doubt about one image: the confidence of every question answered on it, and how they combine.

Kept in the image's info under `CONFIDENCE_KEY`, as `{question: {"confidence", "reasoner", "source", "at"}}`, written by
answers given with a confidence (`source` "answer") and by active learning's scoring (`source` "scoring"). Several
questions on one image combine by their **lowest** confidence: an image is as doubtful as its most doubtful question.
`reasoner` (`reasoner_key`: the served reasoner's weights digest, or its path) makes entries of a reasoner no longer
served stale: they still rank the image until scoring replaces them. At most `MAX_QUESTIONS` are kept: the oldest
answers' entries go first, so a site's question list (at most `MAX_SITE_QUESTIONS`, scored) is never pushed out by
clinicians' own questions.

Only the server writes the record (the datastore routes refuse it in a client's info); what is read back is still
checked: an entry that is not a confidence in [0, 1] is ignored.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

CONFIDENCE_KEY = "medreasoner_confidence"
MAX_QUESTIONS = 64
MAX_SITE_QUESTIONS = 32  # active learning's question list; fewer than MAX_QUESTIONS, so scoring's entries stay


def entries(info: Mapping[str, Any]) -> dict[str, dict]:
    """The well-formed entries of an image's info, by question."""
    book = info.get(CONFIDENCE_KEY) if isinstance(info, Mapping) else None
    if not isinstance(book, dict):
        return {}
    return {q: e for q, e in book.items() if isinstance(q, str) and isinstance(e, dict) and _valid(e.get("confidence"))}


def with_entry(
    info: Mapping[str, Any], question: str, confidence: float, reasoner: Optional[str], source: str
) -> dict[str, dict]:
    """The image's book with `question`'s confidence set (the value to store under CONFIDENCE_KEY)."""
    if not _valid(confidence):
        raise ValueError(f"a confidence is a number in [0, 1], got {confidence!r}")
    book = entries(info)
    book.pop(question, None)
    book[question] = {
        "confidence": round(float(confidence), 4),
        "reasoner": reasoner,
        "source": source,
        "at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    oldest_first = sorted(
        book.items(), key=lambda item: (item[1].get("source") != "answer", str(item[1].get("at", "")))
    )
    return dict(oldest_first[max(0, len(oldest_first) - MAX_QUESTIONS) :])


def reasoner_key(identity: Mapping[str, Any]) -> Optional[str]:
    """Which reasoner gave a confidence (`describe_reasoner`'s identity): its weights digest, else its path."""
    return identity.get("sha256") or identity.get("path")


def lowest_confidence(info: Mapping[str, Any]) -> Optional[float]:
    """How doubtful the reasoner is about this image: its least confident question; None when never asked."""
    values = [float(e["confidence"]) for e in entries(info).values()]
    return min(values) if values else None


def answered_by(info: Mapping[str, Any], reasoner: Optional[str]) -> set[str]:
    """The questions whose confidence the reasoner `reasoner` gave (the ones scoring need not ask again)."""
    return {q for q, e in entries(info).items() if e.get("reasoner") == reasoner}


def _valid(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1

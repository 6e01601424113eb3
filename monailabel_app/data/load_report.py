"""The tally of samples a loader skipped, so one bad file never stops a training or evaluation run.

Loaders raise `SkippedSample` inside one sample's code; the loop around it records the reason here and moves on.
Callers pass a `LoadReport` in and read it after the iterator is exhausted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

EMPTY_MASK = "empty mask"
MISSING_QUESTION = "missing question"
MISSING_FILE = "missing file"
UNREADABLE_IMAGE = "unreadable image"
NO_GROUND_TRUTH = "no ground truth"
SHAPE_MISMATCH = "mask does not match image"
INVALID_RECORD = "invalid record"
UNEXPECTED_ERROR = "unexpected error"


class SkippedSample(Exception):
    """One sample can't be used; `reason` is one of the constants above, the message says which and why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class LoadReport:
    """Counts of loaded and skipped samples (per reason) and the first `max_messages` skip messages."""

    loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    max_messages: int = 20

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def record_skip(self, sample_id: str, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        if len(self.messages) < self.max_messages:
            message = f"{sample_id}: {reason}: {detail}"
            self.messages.append(message)
            logger.warning("Skipped sample %s", message)

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.loaded} samples loaded, none skipped"
        reasons = ", ".join(f"{count} {reason}" for reason, count in self.skipped.most_common())
        return f"{self.loaded} samples loaded, {self.total_skipped} skipped ({reasons})"


def build_or_skip(report: LoadReport, sample_id: str, build: Callable[[], list[T]]) -> list[T]:
    """One record's samples, or none with the reason recorded: a record's bad data must not end the whole run."""
    try:
        samples = build()
    except SkippedSample as skip:
        report.record_skip(sample_id, skip.reason, skip.detail)
        return []
    except Exception as error:  # data we did not foresee; counted and shown, never fatal
        logger.debug("Unexpected error while loading %s", sample_id, exc_info=True)
        report.record_skip(sample_id, UNEXPECTED_ERROR, f"{type(error).__name__}: {error}")
        return []
    report.loaded += len(samples)
    return samples

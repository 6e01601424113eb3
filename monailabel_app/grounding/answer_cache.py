"""The reasoner's recent answers, so corrective clicks refine an answer instead of asking the model again.

Keyed by what makes an answer the same answer: the exact picture the model saw (a digest of its pixels, so another
image, slice or window never matches), the exact prompt (question, think flag, template) and the reasoner that
answered (`generation`: the pipeline bumps it when a retrained model replaces the serving one, and entries of an
older generation never match). Bounded: the least recently used entry goes first. Thread-safe.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from monailabel_app.grounding.clicks import Click

if TYPE_CHECKING:
    from monailabel_app.grounding.pipeline import GroundingResult

DEFAULT_ENTRIES = 64


@dataclass(frozen=True)
class CachedAnswer:
    result: "GroundingResult"  # the reasoner's answer as first grounded (its mask and mask logits included)
    chose_slice: frozenset[Click]  # the clicks that came with the question when it was answered: they chose the slice
    generation: int


class AnswerCache:
    def __init__(self, max_entries: int = DEFAULT_ENTRIES):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedAnswer] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(picture: np.ndarray, prompt: str) -> str:
        digest = hashlib.sha256()
        digest.update(repr((picture.shape, str(picture.dtype))).encode())
        digest.update(np.ascontiguousarray(picture).tobytes())
        digest.update(prompt.encode("utf-8"))
        return digest.hexdigest()

    def get(self, key: str, generation: int) -> Optional[CachedAnswer]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.generation != generation:
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: CachedAnswer) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

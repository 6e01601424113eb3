"""Image embeddings kept in memory, so another question on a slice (or another request on the same volume) skips the
image encoder, the segmenter's whole cost on a CPU.

The key is a digest of the exact picture the encoder is given: its RGB bytes, shape and dtype. Another image, or the
same image under another window, renders other bytes and so misses; equal bytes have the same embedding, whoever sent
them. BLAKE2b-256, so no one can make two pictures share a key (SHA-1 collisions can be made).

The bound is memory, counted from the tensors each entry holds (LiteMedSAM's and SAM's embedding is 4 MiB; SAM2 keeps
high-resolution features beside it, 16 MiB at 1024 px); the least recently used entries go first, and an entry larger
than the whole bound is used once and not kept.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Hashable, Optional

import numpy as np
import torch

MIB = 1 << 20


def picture_key(image: np.ndarray) -> tuple:
    """Content key: the same picture sent twice (even as a new array) hits; shape and dtype tell equal bytes apart."""
    pixels = np.ascontiguousarray(image)
    return hashlib.blake2b(pixels.data, digest_size=32).hexdigest(), pixels.shape, pixels.dtype.str


def held_bytes(holder: Any) -> int:
    """Bytes of the tensors and arrays a predictor holds in its attributes (dicts, lists and tuples of them too);
    the model it points at is shared, not its own, and is not counted."""

    def size(value: Any) -> int:
        if isinstance(value, torch.Tensor):
            return value.element_size() * value.nelement()
        if isinstance(value, np.ndarray):
            return value.nbytes
        if isinstance(value, dict):
            return sum(size(item) for item in value.values())
        if isinstance(value, (list, tuple)):
            return sum(size(item) for item in value)
        return 0

    return sum(size(value) for value in vars(holder).values() if not isinstance(value, torch.nn.Module))


class EmbeddingCache:
    """LRU by memory (`max_bytes`) and optionally by count (`max_entries`). Not thread-safe: the segmenter's lock
    guards it."""

    def __init__(self, max_bytes: int, max_entries: Optional[int] = None):
        if max_bytes < 1 or (max_entries is not None and max_entries < 1):
            raise ValueError(f"the embedding cache needs room for one entry, got {max_bytes} bytes, {max_entries}")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def get(self, key: Hashable) -> Optional[Any]:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, value: Any) -> None:
        size = held_bytes(value)
        self.pop(key)
        if size > self.max_bytes:
            return
        self._entries[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes or (self.max_entries is not None and len(self._entries) > self.max_entries):
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    def pop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[1]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

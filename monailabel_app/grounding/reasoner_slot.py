"""The one owner of which reasoner serves: it loads the wanted checkpoint, and replaces it when that changes.

A server's reasoner changes in two ways, both decided here and nowhere else: retraining publishes the first retrained
reasoner (the wanted path changes from `--conf reasoner` to the model folder's link), or publishes another one under
that link (the folder's `checkpoint_version` changes). Either way the old backend is closed before the new one loads,
so one GPU never holds two 7B copies, and a load that fails leaves the slot empty: the request fails with the reason,
and the next one tries again. A folder caught between the two renames of a publish (no version) keeps what is loaded.

The slot hands out the reasoner with its identity (folder, source, version, weights digest: `reasoning/identity.py`),
taken when it was loaded: an answer names the model that gave it, even when a publish lands while it is being given.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Optional

from monailabel_app.reasoning.reasoner import Reasoner
from monailabel_app.reasoning.transformers_reasoner import checkpoint_version

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingReasoner:
    reasoner: Reasoner
    identity: dict  # {"path", "source", "version", "sha256"} as it was when loaded


class ReasonerSlot:
    def __init__(self, build: Callable[[str], Reasoner], describe: Callable[[str], dict] = lambda path: {"path": path}):
        """`describe(path)`: the identity of the reasoner just built from `path`."""
        self._build = build
        self._describe = describe
        self._lock = threading.Lock()
        self._reasoner: Optional[ServingReasoner] = None
        self._loaded: Optional[tuple[str, Optional[tuple]]] = None  # (path, version) of what is loaded

    def current(self, path: str) -> ServingReasoner:
        """The reasoner for `path` with its identity, loaded or replaced as needed."""
        with self._lock:
            version = checkpoint_version(path)
            if self._reasoner is not None and self._loaded is not None:
                same_path = self._loaded[0] == path
                if same_path and (version is None or version == self._loaded[1]):
                    return self._reasoner
                logger.info(
                    f"Reasoner {path} was {'republished' if same_path else 'published'}: replacing the loaded one"
                )
                self._close_locked()
            reasoner = self._build(path)
            self._reasoner = ServingReasoner(reasoner, self._describe(path))
            self._loaded = (path, version)
            return self._reasoner

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        reasoner, self._reasoner, self._loaded = self._reasoner, None, None
        if reasoner is not None:
            reasoner.reasoner.close()

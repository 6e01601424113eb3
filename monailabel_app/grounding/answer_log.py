"""Every answer the server gave, kept for audit: the answer record (question, reasoning, raw answer, box, points,
window, slice, model and version, time) with the image it was about, its latency, and the picture the model saw with
the answer drawn on it. The answers page and OHIF's answer panel read it; nothing else writes it.

One folder (`--conf answers_dir`, default `<model_dir>/answers`): `<id>.json` and `<id>.png` per answer, each written
whole (temporary file + rename). Ids are the UTC time to the microsecond (made strictly increasing) and a random part
(`20261203T101500123456-1a2b3c4d`), so names sort by time and a request can't name anything else. The newest `keep`
answers are kept (`--conf answers_keep`, 500); older ones are removed as new ones come. A small index of the entries
lives in memory, filled from the folder at start.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional

from monailabel_app.core.json_files import write_json_atomically
from monailabel_app.grounding.refusals import RecentRefusals

logger = logging.getLogger(__name__)
ANSWER_ID = re.compile(r"\d{8}T\d{12}-[0-9a-f]{8}")  # always with fullmatch
DEFAULT_KEEP = 500
MAX_LIST = 100


@dataclass(frozen=True)
class _Indexed:
    answer_id: str
    image_id: Optional[str]
    study_uid: Optional[str]
    asked_by: Optional[str] = None

    def matches(self, image_id: Optional[str], study_uid: Optional[str], asked_by: Optional[str]) -> bool:
        return (
            (image_id is None or self.image_id == image_id)
            and (study_uid is None or self.study_uid == study_uid)
            and (asked_by is None or self.asked_by == asked_by)
        )

    @classmethod
    def of(cls, answer_id: str, entry: Mapping[str, Any]) -> "_Indexed":
        return cls(answer_id, _text(entry.get("image_id")), _text(entry.get("study_uid")), _text(entry.get("asked_by")))


class AnswerLog:
    def __init__(self, folder: str | Path, keep: int = DEFAULT_KEEP):
        if keep < 1:
            raise ValueError(f"--conf answers_keep must be at least 1, got {keep}")
        self.folder = Path(folder)
        self.keep = keep
        self._lock = threading.Lock()
        self._last_us = 0  # the time in the newest id: the next one is later, even within one microsecond
        self._seen_mtime: Optional[int] = None  # the folder as the index last knew it (another process may write)
        self._pending: dict[str, _Indexed] = {}  # indexed, files still being written: kept across a re-read
        self._index: Optional[list[_Indexed]] = None  # oldest first; read from the folder on first use
        self.refusals = RecentRefusals()  # requests refused with a 4xx, in memory only (`refusals.py`)

    def add(self, entry: Mapping[str, Any], picture_png: Optional[bytes] = None) -> str:
        """Stores one answer; returns its id. The picture first, so an entry never names a missing picture."""
        with self._lock:  # the id and its place in the index in one step: the index stays in id (time) order
            index = self._loaded()
            self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
            answer_id = answer_id_at(self._last_us)
            indexed = _Indexed.of(answer_id, entry)
            index.append(indexed)
            self._pending[answer_id] = indexed
            stale, self._index = index[: -self.keep], index[-self.keep :]
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # clinical text: the server's user only
        record = {**entry, "answer_id": answer_id, "picture": None}
        partial = self.folder / f".{answer_id}.png.partial"
        try:
            if picture_png is not None:
                partial.write_bytes(picture_png)
                os.replace(partial, self.folder / f"{answer_id}.png")
                record["picture"] = f"{answer_id}.png"
            write_json_atomically(self.folder / f"{answer_id}.json", record)  # until then, readers skip the entry
        except OSError:  # a full disk: nothing half-written stays, and the index forgets the entry
            partial.unlink(missing_ok=True)
            self._remove(answer_id)
            with self._lock:
                self._pending.pop(answer_id, None)
                self._index = [item for item in self._index if item.answer_id != answer_id]
            raise
        for old in stale:
            self._remove(old.answer_id)
        with self._lock:
            self._pending.pop(answer_id, None)
            self._seen_mtime = self._folder_mtime()
        return answer_id

    def recent(
        self,
        limit: int = 20,
        image_id: Optional[str] = None,
        study_uid: Optional[str] = None,
        asked_by: Optional[str] = None,
    ) -> list[dict]:
        """The newest answers first, optionally only those about one image or study, or asked by one user."""
        limit = max(1, min(int(limit), MAX_LIST))
        with self._lock:
            chosen = [item for item in reversed(self._loaded()) if item.matches(image_id, study_uid, asked_by)][:limit]
        entries = [self.get(item.answer_id) for item in chosen]
        return [entry for entry in entries if entry is not None]

    def get(self, answer_id: str) -> Optional[dict]:
        if not ANSWER_ID.fullmatch(answer_id or ""):
            return None
        try:
            return json.loads((self.folder / f"{answer_id}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def picture_path(self, answer_id: str) -> Optional[Path]:
        """The answer's picture, or None: only a well-formed id, only inside the folder."""
        if not ANSWER_ID.fullmatch(answer_id or ""):
            return None
        path = self.folder / f"{answer_id}.png"
        return path if path.is_file() else None

    def _folder_mtime(self) -> Optional[int]:
        try:
            return self.folder.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _loaded(self) -> list[_Indexed]:
        """The index, read again from the folder when something else changed it (MONAI Label's batch inference
        runs in a subprocess with its own log object)."""
        mtime = self._folder_mtime()
        if self._index is None or (mtime != self._seen_mtime and self._seen_mtime is not None):
            index = []
            names = sorted(p.stem for p in self.folder.glob("*.json")) if self.folder.is_dir() else []
            for name in names:
                entry = self.get(name)
                if entry is not None:
                    index.append(_Indexed.of(name, entry))
            known = {item.answer_id for item in index}
            index += [item for item in self._pending.values() if item.answer_id not in known]
            index.sort(key=lambda item: item.answer_id)
            self._index, self._seen_mtime = index[-self.keep :], mtime
            if index:
                self._last_us = max(self._last_us, _microseconds_of(index[-1].answer_id))
        return self._index

    def _remove(self, answer_id: str) -> None:
        for suffix in (".json", ".png"):
            try:
                (self.folder / f"{answer_id}{suffix}").unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                logger.warning(f"Could not remove an old answer {answer_id}{suffix}: {error}")


def answer_id_at(microseconds: int) -> str:
    when = datetime.fromtimestamp(microseconds // 1_000_000, timezone.utc)
    return when.strftime("%Y%m%dT%H%M%S") + f"{microseconds % 1_000_000:06d}-{secrets.token_hex(4)}"


def _microseconds_of(answer_id: str) -> int:
    stamp = answer_id.split("-")[0]
    when = datetime.strptime(stamp[:15], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    return int(when.timestamp()) * 1_000_000 + int(stamp[15:])


def _text(value: Any) -> Optional[str]:
    return None if value is None else str(value)

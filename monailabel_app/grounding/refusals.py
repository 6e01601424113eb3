"""The server's recent refusals of a question or a click (a 4xx with its message), so a viewer that shows only "Failed
to Run Segmentation" (the OHIF bundled with MONAI Label 0.8.5) can still tell the clinician why: OHIF's answer panel
reads the newest one about the open study from `GET /answers/list` (`lib/server/routes/answers.py`).

In memory only and bounded (the newest `keep`): a refusal is news for the person who just clicked, not a record, and
a flood of bad requests never pushes an answer out of the answer log. Each refusal records who asked (`asked_by`), so
the routes show it to that user only, as they do answers. Ids are the UTC time to the microsecond plus a random part,
written as the answer log's are (`answer_log.py`), so a refusal and an answer compare by time as strings.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Optional

DEFAULT_KEEP = 200
MESSAGE_CHARS = 1000


class RecentRefusals:
    def __init__(self, keep: int = DEFAULT_KEEP):
        self._entries: deque[dict] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._last_us = 0

    def add(
        self,
        message: str,
        model: Optional[str],
        image_id: Optional[str],
        study_uid: Optional[str],
        asked_by: Optional[str],
    ) -> str:
        with self._lock:
            self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
            refusal_id = _time_id(self._last_us)
            self._entries.append(
                {
                    "refusal_id": refusal_id,
                    "message": str(message)[:MESSAGE_CHARS],
                    "model": None if model is None else str(model)[:80],
                    "image_id": image_id,
                    "study_uid": study_uid,
                    "asked_by": asked_by,
                }
            )
            return refusal_id

    def latest(
        self, image_id: Optional[str] = None, study_uid: Optional[str] = None, asked_by: Optional[str] = None
    ) -> Optional[dict]:
        """The newest refusal about the image or study (None: any), asked by `asked_by` (None: anyone's)."""
        with self._lock:
            for entry in reversed(self._entries):
                if (
                    (image_id is None or entry["image_id"] == image_id)
                    and (study_uid is None or entry["study_uid"] == study_uid)
                    and (asked_by is None or entry["asked_by"] == asked_by)
                ):
                    return dict(entry)
        return None


def _time_id(microseconds: int) -> str:
    when = datetime.fromtimestamp(microseconds // 1_000_000, timezone.utc)
    return when.strftime("%Y%m%dT%H%M%S") + f"{microseconds % 1_000_000:06d}-{secrets.token_hex(4)}"

"""The last answer on an image, per clinician: what that clinician's next clicks correct and next saved label records.

Kept in the image's info under `LAST_ANSWERS_KEY` as `{asker: record}` (`AnswerRecord.to_info()`), the asker being the
signed-in user's name, or "" with sign-in off (everyone is one user then). One clinician's answer is never continued
or saved by another, and reading it is left to the routes' visibility rules. Images answered before this was kept
per user hold one record under `LEGACY_KEY`; it counts as the "" asker's. At most `KEEP_ASKERS` askers are kept per
image (the most recent), so an image's info stays small.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from monailabel_app.grounding.records import LAST_QUERY_KEY as LEGACY_KEY

LAST_ANSWERS_KEY = "medreasoner_last_answers"
KEEP_ASKERS = 50


def asker_key(asked_by: Optional[str]) -> str:
    return str(asked_by or "")


def last_answers(info: Optional[Mapping[str, Any]]) -> dict[str, dict]:
    """Every asker's last record on the image (a copy)."""
    info = info or {}
    kept = info.get(LAST_ANSWERS_KEY)
    answers = {str(k): dict(v) for k, v in kept.items() if isinstance(v, Mapping)} if isinstance(kept, Mapping) else {}
    legacy = info.get(LEGACY_KEY)
    if isinstance(legacy, Mapping) and legacy.get("question") and "" not in answers:
        answers[""] = dict(legacy)
    return answers


def last_answer(info: Optional[Mapping[str, Any]], asked_by: Optional[str]) -> dict:
    """The asker's last record on the image, or {}."""
    return last_answers(info).get(asker_key(asked_by), {})


def with_last_answer(info: Optional[Mapping[str, Any]], asked_by: Optional[str], record: Mapping[str, Any]) -> dict:
    """The value to store under LAST_ANSWERS_KEY once `asked_by` got `record` (the oldest askers beyond KEEP_ASKERS
    dropped)."""
    answers = last_answers(info)
    answers.pop(asker_key(asked_by), None)
    answers[asker_key(asked_by)] = dict(record)  # last in, newest
    return dict(list(answers.items())[-KEEP_ASKERS:])

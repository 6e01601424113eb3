"""What a final label records of the answer it was drawn from: the one merge, for every datastore.

Slicer and OHIF save a label without the question. The saver's own last answer on the image (never another
clinician's: `grounding/last_answers.py`) goes into the label's info before it is stored, so a folder keeps it in the
label's info and a PACS in the SEG and the report. A question sent with the save that differs from the answered one
wins, and the answer's fields are left out (they don't belong to it). The model's answer can only come from the
server: keys naming it in what was sent are dropped (the routes refuse them already).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from monailabel_app.data.metadata import find_value, normalise_key
from monailabel_app.grounding.last_answers import last_answer
from monailabel_app.grounding.records import SERVER_ANSWER_KEYS

ANSWER_KEYS_NORMALISED = frozenset(normalise_key(key) for key in SERVER_ANSWER_KEYS)


def with_saved_answer(image_info: Optional[Mapping[str, Any]], label_info: Mapping[str, Any]) -> dict:
    """`label_info` (what the save sent, with `saved_by`) and the saver's last answer on the image."""
    sent = {k: v for k, v in label_info.items() if normalise_key(k) not in ANSWER_KEYS_NORMALISED}
    asked = last_answer(image_info, label_info.get("saved_by"))
    if not asked or find_value(sent, "question") not in (None, asked.get("question")):
        return sent
    return {**{k: v for k, v in asked.items() if v is not None}, **sent}

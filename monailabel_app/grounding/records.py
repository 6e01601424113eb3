"""What an answer leaves behind: the one definition of the record a result, an image's last query and a saved label
keep, so every place that stores or reads one (the server, the PACS's DICOM SEG, training data) agrees on its fields.

The record (`AnswerRecord.to_info()`, plain JSON):
- `question`, `slice` (None for 2D), `window`, `think`: what was asked, and how the picture was rendered for it, so
  a label trained on later is rendered exactly as the clinician saw it;
- `reasoner`, `reasoner_version` (`source`, `version`, `sha256`): which model answered;
- `status`, `reasoning`, `raw_text`, `box`, `points`: what it answered (box and points in the picture's pixels);
- `confidence`: its self-consistency in [0, 1] when it was measured (`reasoning/self_consistency.py`);
- `answered_at`: when (UTC); `answer_id`: its entry in the server's answer log (`answer_log.py`), with the picture;
- `refined_by_clicks`: {`foreground`, `background`: [[x, y], ...]} when the clinician's clicks corrected the answer's
  mask (the reasoner's answer kept): the saved label's mask is then the clinician's, a training signal.
The server keeps each clinician's last record per image in the image's info (`last_answers.py`), and copies it into
the info of the final label that clinician saves next (a question sent with the save wins).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

LAST_QUERY_KEY = "medreasoner_last_query"  # image info of earlier versions: the last record, whoever asked
# What the model answered and which model it was: only the server writes these (a client's save may name the question,
# slice and window it labelled, never the model's answer), so the archive can't be made to say what the model didn't.
SERVER_ANSWER_KEYS = frozenset(
    {"reasoner", "reasoner_version", "status", "reasoning", "raw_text", "box", "points", "confidence"}
    | {"answered_at", "answer_id", "refined_by_clicks", "ReportSeriesInstanceUID", "report_stored"}
)


@dataclass
class AnswerRecord:
    question: str
    slice: Optional[int] = None
    window: Optional[str] = None
    think: Optional[bool] = None
    reasoner: Optional[str] = None
    reasoner_version: Optional[dict] = None
    status: Optional[str] = None
    reasoning: Optional[str] = None
    raw_text: Optional[str] = None
    box: Optional[list] = None
    points: Optional[list] = None
    confidence: Optional[float] = None
    answered_at: Optional[str] = None
    answer_id: Optional[str] = None
    refined_by_clicks: Optional[dict] = None

    def to_info(self) -> dict[str, Any]:
        """The record as label or image info: the fields that have a value."""
        return {key: value for key, value in asdict(self).items() if value is not None}


# The record's clinical part: what was asked and what the model answered (a reader other than the asker is not shown
# it); which model answered is not clinical.
ANSWER_TEXT_KEYS = frozenset(spec.name for spec in fields(AnswerRecord)) - {"reasoner", "reasoner_version"}

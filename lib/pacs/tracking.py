"""One answer's tracking identifier: the SEG's segment and the report's measurement groups carry the same one, so a
viewer (OHIF's measurement tracking, Slicer's QuantitativeReporting) knows they are one finding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import highdicom

from lib.pacs.dicom_text import fit_text


@dataclass(frozen=True)
class Tracking:
    uid: str  # Tracking Unique Identifier (UI)
    identifier: str  # Tracking Identifier (a TEXT item in the report, LO in the SEG)


def new_tracking(record: Mapping[str, Any]) -> Tracking:
    """A fresh UID, and a name a person can read: the answer's id in the server's answer log when it has one."""
    answer_id = fit_text(str(record.get("answer_id") or ""), "LO")
    name = f"MedReasoner answer {answer_id}" if answer_id else "MedReasoner answer"
    return Tracking(str(highdicom.UID()), fit_text(name, "LO"))

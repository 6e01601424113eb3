"""What the answer found, as the codes a viewer lists: the SEG's segment category and type, and the report's finding.

A small built-in table (SNOMED CT codes from DICOM's CID 7150/7151, the values pydicom's code dictionary holds) of
the structures and findings an implicit question is usually about. The first term of the table that the answer's own
words name (its reasoning, read by sentences from the end, where the model concludes; then the segment's name) gives
the code; where none does, a generic finding code is used and the target is kept as text. A code chosen from the
model's words is a convenience for viewers and searches, not a diagnosis: the words stay beside it in the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from highdicom.sr import CodedConcept

ANATOMY = CodedConcept("123037004", "SCT", "Anatomical Structure")
ABNORMAL = CodedConcept("49755003", "SCT", "Morphologically Abnormal Structure")
GENERIC_CATEGORY = CodedConcept("404684003", "SCT", "Finding")
GENERIC_TYPE = CodedConcept("365853002", "SCT", "Imaging finding")

# (words that name it, category, SNOMED CT value, meaning); more specific terms before the general ones they contain
TABLE = (
    (r"pleural effusions?", ABNORMAL, "60046008", "Pleural effusion"),
    (r"pericardial effusions?", ABNORMAL, "373945007", "Pericardial effusion"),
    (r"pneumothora(?:x|ces)", ABNORMAL, "36118008", "Pneumothorax"),
    (r"cardiomegaly", ABNORMAL, "287272002", "Cardiomegaly"),
    (r"ha?emorrhages?|bleed(?:ing)?", ABNORMAL, "50960005", "Hemorrhage"),
    (r"abscess(?:es)?", ABNORMAL, "44132006", "Abscess"),
    (r"thromb(?:us|i)", ABNORMAL, "396339007", "Thrombus"),
    (r"oedema|edema", ABNORMAL, "79654002", "Edema"),
    (r"cysts?", ABNORMAL, "367643001", "Cyst"),
    (r"nodules?", ABNORMAL, "27925004", "Nodule"),
    (r"tumou?rs?|neoplasms?|carcinomas?|cancers?", ABNORMAL, "108369006", "Neoplasm"),
    (r"mass(?:es)?", ABNORMAL, "4147007", "Mass"),
    (r"effusions?", ABNORMAL, "41699000", "Effusion"),
    (r"lymph nodes?", ANATOMY, "59441001", "Lymph node"),
    (r"lungs?", ANATOMY, "39607008", "Lung"),
    (r"liver", ANATOMY, "10200004", "Liver"),
    (r"kidneys?", ANATOMY, "64033007", "Kidney"),
    (r"heart", ANATOMY, "80891009", "Heart"),
    (r"spleen", ANATOMY, "78961009", "Spleen"),
    (r"brain", ANATOMY, "12738006", "Brain"),
    (r"pancreas", ANATOMY, "15776009", "Pancreas"),
    (r"gall ?bladder", ANATOMY, "28231008", "Gallbladder"),
    (r"aorta", ANATOMY, "15825003", "Aorta"),
    (r"stomach", ANATOMY, "69695003", "Stomach"),
    (r"prostate", ANATOMY, "41216001", "Prostate"),
    (r"o?esophagus", ANATOMY, "32849002", "Esophagus"),
    (r"trachea", ANATOMY, "44567001", "Trachea"),
    (r"thyroid", ANATOMY, "69748006", "Thyroid"),
    (r"adrenal(?: glands?)?", ANATOMY, "23451007", "Adrenal gland"),
    (r"uterus", ANATOMY, "35039007", "Uterus"),
    (r"colon", ANATOMY, "71854001", "Colon"),
    (r"diaphragm", ANATOMY, "5798000", "Diaphragm"),
    (r"pleura", ANATOMY, "3120008", "Pleura"),
    (r"ribs?", ANATOMY, "113197003", "Rib"),
)
SENTENCE_END = re.compile(r"(?<=[.!?;\n])\s+")
_PATTERNS = tuple(
    (re.compile(rf"\b(?:{words})\b", re.IGNORECASE), category, CodedConcept(value, "SCT", meaning))
    for words, category, value, meaning in TABLE
)


@dataclass(frozen=True)
class Finding:
    """The codes of what was found, and the words it was found from (None when no text named it)."""

    category: CodedConcept
    type: CodedConcept
    words: Optional[str]

    @property
    def coded(self) -> bool:
        return self.type is not GENERIC_TYPE


def finding_of(texts: Sequence[Optional[str]]) -> Finding:
    """What the first of `texts` that names a finding names; else the generic finding, with the first non-empty text
    as its words. A text is read by sentences from its end (the model concludes there); in a sentence, a finding
    comes before the structure it is in ("a mass in the liver" is a mass), then the longest, latest term."""
    for text in texts:
        for sentence in reversed(SENTENCE_END.split(text or "")):
            hits = [
                (category is ABNORMAL, match.end(), -match.start(), category, code, match.group(0))
                for pattern, category, code in _PATTERNS
                for match in pattern.finditer(sentence)
            ]
            if hits:
                *_, category, code, words = max(hits, key=lambda hit: hit[:3])
                return Finding(category, code, words)
    words = next((text for text in texts if text), None)
    return Finding(GENERIC_CATEGORY, GENERIC_TYPE, words)


def answer_finding(record: Mapping[str, Any], label: Optional[str]) -> Finding:
    """The finding of an answer (`grounding/records.py`) whose mask is the segment `label`: the SEG's answer segment
    and the report's measurement groups both take theirs from here, so they agree."""
    texts = (record.get("reasoning"), label, record.get("question"))
    return finding_of([text if isinstance(text, str) else None for text in texts])

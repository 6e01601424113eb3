"""What a DICOM validator says about the text of a SEG or SR, checked here without the code under test: every string
element, read back with pydicom under the file's SpecificCharacterSet, holds no control character its VR forbids
and fits its VR's limit in bytes of that encoding (as dciodvfy counts); and, where dicom3tools is installed, what
dciodvfy itself reports. Also a hostile answer record to write with."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import List, Optional

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import DicomDictionary, dictionary_VM
from pydicom.multival import MultiValue

HOSTILE = "\x00\x1b[31m" + "é" * 80 + "\u202e\x85\x7f\x9b\ud800\r\n\t\x0c\x0b\\ end"  # 80 "é" are 160 bytes
HOSTILE_RECORD = {
    "question": HOSTILE,
    "status": "ok\x1b]0;owned\x07",
    "reasoning": HOSTILE * 100,  # ~19 KB: more than ST's 1,024 bytes and LT's 10,240
    "raw_text": HOSTILE * 10,
    "box": [10.0, 12.0, 40.0, 44.0],
    "points": [[20.0, 25.0]] * 2000,  # the JSON in ImageComments can't keep it all
    "window": HOSTILE,
    "slice": 6,
    "model": "implicit\\query " + HOSTILE,
    "reasoner": HOSTILE,
    "reasoner_version": {"version": HOSTILE, "source": "published", "sha256": "ab" * 32},
    "answered_at": HOSTILE,
    "answer_id": HOSTILE,
    "app": "MedReasoner for MONAI Label " + HOSTILE,
}
MAX_BYTES = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10_240, "UC": 2**32 - 2}
MAX_BYTES["UT"] = 2**32 - 2
TEXT_VRS = {"ST", "LT", "UT"}
FORBIDDEN = {  # PS3.5 Table 6.2-1; ESC too, as these objects declare UTF-8 (no code extensions)
    "text": re.compile(r"[\x00-\x09\x0b\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"),
    "line": re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"),
}
TEXT_VR_MESSAGE = re.compile(r"\[(AE|CS|SH|LO|PN|ST|LT|UT|UC)\]|TextValue")


def text_problems(path: str) -> List[str]:
    """One line per string value of `path` that holds a forbidden character or is over its limit in bytes, or that
    holds non-ASCII text the file doesn't declare as UTF-8; [] for a clean file."""
    dataset = pydicom.dcmread(path)
    charset = dataset.get("SpecificCharacterSet") or "ISO_IR 6"
    encoding = convert_encodings([charset] if isinstance(charset, str) else list(charset))[0]
    problems: List[str] = []

    def check(_: pydicom.Dataset, element: pydicom.DataElement) -> None:
        if element.VR not in MAX_BYTES or element.value is None:
            return
        values = list(element.value) if isinstance(element.value, MultiValue) else [element.value]
        if len(values) > 1 and element.tag in DicomDictionary and dictionary_VM(element.tag) == "1":
            problems.append(f"{element.keyword}: {len(values)} values where one is allowed (a backslash?)")
        for value in values:
            text = str(value)
            forbidden = FORBIDDEN["text" if element.VR in TEXT_VRS else "line"].search(text)
            if forbidden:
                problems.append(f"{element.keyword} ({element.VR}) holds U+{ord(forbidden.group()):04X}")
            size = len(text.encode(encoding, errors="replace"))
            if size > MAX_BYTES[element.VR]:
                problems.append(f"{element.keyword} ({element.VR}) is {size} bytes, over {MAX_BYTES[element.VR]}")
            if not text.isascii() and charset != "ISO_IR 192":
                problems.append(f"{element.keyword} is not ASCII but the character set is {charset}")

    dataset.walk(check)
    return problems


def dciodvfy_messages(path: str) -> Optional[List[str]]:
    """dciodvfy's errors and warnings about `path` (dicom3tools); None when dciodvfy isn't installed."""
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        return None
    run = subprocess.run([dciodvfy, "-new", path], capture_output=True, text=True, errors="replace", timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith(("Error", "Warning"))]


def dciodvfy_text_messages(path: str) -> Optional[List[str]]:
    """dciodvfy's messages about a text element (a string VR, or an SR's TextValue); None without dciodvfy."""
    messages = dciodvfy_messages(path)
    return None if messages is None else [line for line in messages if TEXT_VR_MESSAGE.search(line)]

"""A question the server has checked, as the answer's path takes it: the image it resolved and the client's options.

`ImageRef` is made only where an image is resolved (the infer route, from an id, an upload or a session; `main.py`
for MONAI Label's own callers): the rest of the path reads the file it names and never resolves or checks it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class ImageRef:
    path: str  # a file or DICOM folder the server made or resolved: never a path a client chose
    image_id: Optional[str] = None  # the datastore id it came from; None for an upload or a session


@dataclass(frozen=True)
class AnswerRequest:
    model: str
    image: ImageRef
    params: Mapping[str, Any]  # the client's options (question, slice, window, clicks, ...); no server keys
    asked_by: Optional[str] = None  # the signed-in user (None without authentication)
    study_uid: Optional[str] = None  # a PACS series' study: the answer log files its answers by study
    instance_numbers: Optional[list] = None  # a PACS series' slices as the viewer numbers them

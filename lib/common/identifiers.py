"""The one gate for every identifier a request brings (image and label ids, tags, session ids, upload file names), and
the fence that keeps every file the server touches for a request inside the folder it belongs to.

Ids become file names in the datastore (`<id>.nii.gz`, `labels/<tag>/<id>.nrrd`), so an id must be one plain file
name: no path separators, no `..`, nothing hidden (a leading dot), no control or invisible formatting characters
(a right-to-left override can disguise a name), at most 128 characters. Ordinary names with spaces, as 3D Slicer
gives a volume ("CT chest 2"), DICOM UIDs and the sample ids all pass. Tags name label folders and are stricter:
letters, digits, `_` and `-`. Anything else is a `RequestError` (HTTP 422) saying what is allowed.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable

from monailabel_app.core.errors import RequestError

MAX_ID_CHARS = 128
MAX_ID_BYTES = 200  # file systems allow 255 bytes per name; the extension and version stamps need the rest
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SESSION_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
REFUSED_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")  # control, format (bidi overrides), surrogates, private, unassigned


class InvalidIdentifierError(RequestError):
    """An id, tag or file name a request sent can't name a file safely; the message says what is allowed."""


def check_id(value: object, what: str = "image id") -> str:
    """`value` if it is safe as one file name in the datastore, else InvalidIdentifierError."""
    if not isinstance(value, str) or not value:
        raise InvalidIdentifierError(f"The {what} is empty.")
    shown = repr(value[:60] + ("..." if len(value) > 60 else ""))
    if len(value) > MAX_ID_CHARS or len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise InvalidIdentifierError(f"The {what} {shown} is too long: at most {MAX_ID_CHARS} characters.")
    if value != value.strip():
        raise InvalidIdentifierError(f"The {what} {shown} starts or ends with a space; remove it.")
    if "/" in value or "\\" in value or (os.altsep and os.altsep in value):
        raise InvalidIdentifierError(f"The {what} {shown} contains a path separator (/ or \\); send a plain name.")
    if value.startswith(".") or ".." in value:
        raise InvalidIdentifierError(f"The {what} {shown} starts with a dot or contains '..'; send a plain name.")
    for character in value:
        if unicodedata.category(character) in REFUSED_CATEGORIES:
            raise InvalidIdentifierError(
                f"The {what} {shown} contains an invisible or control character (U+{ord(character):04X})."
            )
    return value


def check_tag(value: object, what: str = "label tag") -> str:
    if not isinstance(value, str) or not TAG_PATTERN.match(value):
        raise InvalidIdentifierError(
            f"The {what} {str(value)[:60]!r} is not allowed: use 1-64 letters, digits, '_' or '-' (e.g. final)."
        )
    return value


def check_session_id(value: object) -> str:
    if not isinstance(value, str) or not SESSION_PATTERN.match(value):
        raise InvalidIdentifierError(f"{str(value)[:60]!r} is not a session id (the server gives them out as UUIDs).")
    return value


def upload_suffix(filename: object, allowed: Iterable[str]) -> str:
    """The known suffix an upload's name ends with (longest first: `.nii.gz` before `.gz`), else InvalidIdentifierError.
    Only the suffix of a client's file name is ever used: the name itself never becomes a path."""
    name = os.path.basename(str(filename or "")).lower()
    for suffix in sorted(allowed, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    raise InvalidIdentifierError(
        f"The upload {str(filename)[:80]!r} has no accepted file type; send one of: {', '.join(sorted(allowed))}."
    )


def upload_stem(filename: object, suffix: str) -> str:
    """The client's file name without folder and suffix, if it passes the id gate; kept so messages name the user's
    file. An unsafe or missing name becomes `upload`."""
    name = os.path.basename(str(filename or "").replace("\\", "/"))
    stem = name[: -len(suffix)] if name.lower().endswith(suffix) else name
    try:
        return check_id(stem, "file name")
    except InvalidIdentifierError:
        return "upload"


def is_inside(root: str | Path, path: str | Path) -> bool:
    """Whether `path`, with every symbolic link resolved, lies inside `root` (also resolved)."""
    real_root = os.path.realpath(root)
    real_path = os.path.realpath(path)
    return os.path.commonpath([real_root, real_path]) == real_root


def require_inside(root: str | Path, path: str | Path, what: str = "file") -> str:
    """The fence behind the gate: refuses (RequestError) a path that would leave `root`."""
    if not is_inside(root, path):
        raise InvalidIdentifierError(f"The {what} would lie outside the datastore; refused.")
    return str(path)

"""Uploads and form parameters as a request sends them, checked before anything is stored or read.

- A file is copied into the request's scratch folder under the client's own file name (passed through the id gate,
  so a message names the user's file, not a server path), with an accepted suffix only; the bytes are counted; then
  it passes the one gate for uploaded files (`admit_file`) before anything reads it.
- `params` (a form field holding JSON, as Slicer and OHIF send it) must be one JSON object of bounded size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from lib.common.identifiers import upload_stem, upload_suffix
from monailabel_app.core.errors import RequestError, TooLargeError
from monailabel_app.imaging.file_formats import format_of
from monailabel_app.imaging.self_contained import rewrite_self_contained

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
RAW_LABEL_SUFFIX = ".bin"  # OHIF's raw labelmap: voxels only, read by numpy
DICOM_SUFFIXES = (".dcm",)
MAX_PARAMS_CHARS = 64 * 1024
MAX_PARAMS_DEPTH = 16  # nesting of objects and lists; stored info is written back with Python's recursive encoder
COPY_CHUNK = 1 << 20


async def save_upload(upload: UploadFile, folder: Path, allowed: Iterable[str], max_bytes: int) -> Path:
    """The upload written to `folder/<client's name>` and admitted (`admit_file`); RequestError for a wrong type or
    content, TooLargeError over the limit. Every route that takes a file saves it here, and only here."""
    suffix = upload_suffix(upload.filename, allowed)
    target = _unique(folder, upload_stem(upload.filename, suffix), suffix)
    await run_in_threadpool(_copy_bounded, upload, target, max_bytes)
    await run_in_threadpool(admit_file, target)
    return target


def admit_file(path: Path) -> None:
    """The gate an uploaded file passes before any library opens it: its content must be the format its name says
    (`file_formats`), and a NRRD or MetaImage file is rewritten from the header fields our reader took, refusing any
    that names pixels elsewhere (`self_contained`). OHIF's raw labelmap (`.bin`) is no image format: only numpy reads
    it, as bytes."""
    if path.name.lower().endswith(RAW_LABEL_SUFFIX):
        return
    rewrite_self_contained(str(path), format_of(str(path)))


def _unique(folder: Path, stem: str, suffix: str) -> Path:
    target = folder / f"{stem}{suffix}"
    number = 1
    while target.exists():
        target = folder / f"{stem}-{number}{suffix}"
        number += 1
    return target


def _copy_bounded(upload: UploadFile, target: Path, max_bytes: int) -> None:
    written = 0
    with open(target, "wb") as out:
        while chunk := upload.file.read(COPY_CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise TooLargeError(f"The upload is over the server's limit of {max_bytes // (1 << 20)} MB.")
            out.write(chunk)
    if written == 0:
        raise RequestError(f"The upload {target.name!r} is empty.")


def parse_params(raw: Optional[str], what: str = "params") -> dict[str, Any]:
    """`{}` for nothing; a dict for one JSON object; RequestError for anything else (a list, null, garbage, NUL)."""
    if raw is None or not str(raw).strip():
        return {}
    raw = str(raw)
    if len(raw) > MAX_PARAMS_CHARS:
        raise RequestError(f"'{what}' is {len(raw):,} characters long; the limit is {MAX_PARAMS_CHARS:,}.")
    if "\x00" in raw:
        raise RequestError(f"'{what}' contains a NUL character.")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestError(f'\'{what}\' is not JSON; send an object such as {{"question": "..."}}.') from None
    if not isinstance(value, dict):
        raise RequestError(f"'{what}' must be a JSON object ({{...}}), not {type(value).__name__}.")
    if _depth(value) > MAX_PARAMS_DEPTH:
        raise RequestError(f"'{what}' nests objects and lists deeper than {MAX_PARAMS_DEPTH} levels.")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of JSON data, without recursion (the value may be up to ~1,000 levels deep here)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest

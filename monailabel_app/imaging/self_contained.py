"""NRRD and MetaImage files whose pixels are inside the file itself, and nothing else.

Both formats have a text header that may name another file to read the pixels from (NRRD's `data file`, in two
spellings, with a `LIST` or `%d` pattern of several files; MetaImage's `ElementDataFile`), and the server reads what
the header names. A check that splits the header its own way can be passed: ITK's NRRD reader (teem) ends a line at
`\\n`, `\\r\\n` or a lone `\\r`, matches field names in any case and in more than one spelling, and a check that reads
only part of the header never sees a field after that part. So:

- the header is read here by the format's own rules (teem's for NRRD, which this module follows line for line), whole
  or not at all: a header longer than `MAX_HEADER_BYTES` is refused, never cut;
- a field that names other files (or skips into the data, which only makes sense for them) is refused;
- an upload is then *rewritten*: the header is written anew from the fields read here, with plain `\\n` line ends,
  followed by the data bytes. What ITK later reads is exactly what was checked, whatever quirk of a reader's parsing
  an attacker aims at. Files read later (the datastore's) are checked again by the same reader on every read.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass

from monailabel_app.imaging.file_formats import METAIMAGE, NRRD, ImageFormat
from monailabel_app.imaging.invalid_image import InvalidImageError

MAX_HEADER_BYTES = 1 << 20  # a Slicer .seg.nrrd of a hundred segments has a header of ~100 KB
COPY_CHUNK = 1 << 20

# Every spelling teem knows for its fields (its `_nrrdFieldStrEqv`), matched in any case as teem does.
NRRD_FIELDS = {
    "content": "content",
    "number": "number",
    "type": "type",
    "block size": "block size",
    "blocksize": "block size",
    "dimension": "dimension",
    "space": "space",
    "space dimension": "space dimension",
    "spacedimension": "space dimension",
    "sizes": "sizes",
    "spacings": "spacings",
    "thicknesses": "thicknesses",
    "axis mins": "axis mins",
    "axismins": "axis mins",
    "axis maxs": "axis maxs",
    "axismaxs": "axis maxs",
    "space directions": "space directions",
    "spacedirections": "space directions",
    "centers": "centers",
    "centerings": "centers",
    "kinds": "kinds",
    "labels": "labels",
    "units": "units",
    "min": "min",
    "max": "max",
    "old min": "old min",
    "oldmin": "old min",
    "old max": "old max",
    "oldmax": "old max",
    "endian": "endian",
    "encoding": "encoding",
    "line skip": "line skip",
    "lineskip": "line skip",
    "byte skip": "byte skip",
    "byteskip": "byte skip",
    "sample units": "sample units",
    "sampleunits": "sample units",
    "space units": "space units",
    "spaceunits": "space units",
    "space origin": "space origin",
    "spaceorigin": "space origin",
    "measurement frame": "measurement frame",
    "measurementframe": "measurement frame",
    "data file": "data file",
    "datafile": "data file",
}
NRRD_REFUSED = {
    "data file": "names a separate data file",
    "line skip": "skips lines before its data (only detached data files need that)",
    "byte skip": "skips bytes before its data (only detached data files need that)",
}
# MetaIO's fields that describe pixels and geometry; values are numbers, booleans or type names. Other fields (names,
# comments, ITK's own keys) are left out of the rewritten header; HeaderSize skips into data and is refused.
METAIMAGE_FIELDS = frozenset(
    {
        "ObjectType",
        "ObjectSubType",
        "NDims",
        "BinaryData",
        "BinaryDataByteOrderMSB",
        "ElementByteOrderMSB",
        "CompressedData",
        "CompressedDataSize",
        "TransformMatrix",
        "Rotation",
        "Orientation",
        "Offset",
        "Position",
        "Origin",
        "CenterOfRotation",
        "AnatomicalOrientation",
        "ElementSpacing",
        "ElementSize",
        "DimSize",
        "ElementNumberOfChannels",
        "ElementType",
        "ElementMin",
        "ElementMax",
    }
)
METAIMAGE_VALUE = re.compile(rb"^[A-Za-z0-9_.+\-? ]{0,400}$")  # "?": an unknown axis (ITK writes `??` for a 2D one)
LINE_END = re.compile(rb"\r\n|\r|\n")  # teem's: the first \r or \n, a \r\n taken as one
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # TAB is allowed in a header line; nothing else below space


class ExternalDataError(InvalidImageError):
    """The file's header names pixels outside the file, or can't be read whole by the format's rules."""


@dataclass(frozen=True)
class ReadHeader:
    canonical: bytes  # the header as this module writes it, ending where the data begins
    data_offset: int  # where the data begins in the original file


def check_self_contained(path: str, image_format: ImageFormat) -> None:
    """Refuses (ExternalDataError) a NRRD or MetaImage file that is not self-contained; other formats pass."""
    _read_header(path, image_format)


def rewrite_self_contained(path: str, image_format: ImageFormat) -> None:
    """Writes a NRRD or MetaImage file anew, in place, from the header fields read here and its data bytes, so that
    no reader parses anything this module did not; other formats are left as they are."""
    header = _read_header(path, image_format)
    if header is None:
        return
    partial = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
    try:
        with open(path, "rb") as source, open(partial, "wb") as target:
            target.write(header.canonical)
            source.seek(header.data_offset)
            shutil.copyfileobj(source, target, COPY_CHUNK)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _read_header(path: str, image_format: ImageFormat) -> ReadHeader | None:
    if image_format not in (NRRD, METAIMAGE):
        return None
    with open(path, "rb") as stream:
        head = stream.read(MAX_HEADER_BYTES + 2)  # +2: a line end just at the limit is seen whole
    name = os.path.basename(path)
    return _nrrd_header(head, name) if image_format is NRRD else _metaimage_header(head, name)


def teem_lines(head: bytes, name: str):
    """(line, offset after its end) as teem's `airOneLine` reads them: a line ends at `\\n`, `\\r\\n` or a lone `\\r`.
    A header must end within MAX_HEADER_BYTES and before the end of the file."""
    position = 0
    while True:
        line_end = LINE_END.search(head, position)  # one scan per line: a header of a million short lines is cheap
        if line_end is None:
            if len(head) > MAX_HEADER_BYTES:
                raise _too_long(name)
            raise ExternalDataError(f"The NRRD file {name!r} has no data after its header; send a single .nrrd file.")
        end, after = line_end.start(), line_end.end()
        if after > MAX_HEADER_BYTES:
            raise _too_long(name)
        yield head[position:end], after
        position = after


def _nrrd_header(head: bytes, name: str) -> ReadHeader:
    lines = teem_lines(head, name)
    magic, _ = next(lines)
    if not re.fullmatch(rb"NRRD000[1-5]", magic):
        raise ExternalDataError(f"The NRRD file {name!r} does not start with a NRRD magic line (NRRD0001 to NRRD0005).")
    kept, seen = [magic], set()
    for line, after in lines:
        if not line:  # the blank line that ends the header: the data follows it
            return ReadHeader(b"\n".join(kept) + b"\n\n", after)
        if CONTROL.search(line):
            raise ExternalDataError(f"The NRRD file {name!r} has a control character in its header.")
        if line.startswith(b"#"):
            continue
        field = _nrrd_field(line)
        if field is None:
            kept.append(line)  # a `key:=value` pair: kept as it is, as teem reads it
            continue
        canonical, value = field
        if canonical in NRRD_REFUSED:
            raise ExternalDataError(
                f"The NRRD file {name!r} {NRRD_REFUSED[canonical]} ({line[:80].decode('latin-1')!r}); send a single "
                ".nrrd file with its data inside."
            )
        if canonical in seen:
            raise ExternalDataError(f"The NRRD file {name!r} gives the field {canonical!r} twice.")
        seen.add(canonical)
        kept.append(canonical.encode() + b": " + value)
    raise AssertionError("unreachable: teem_lines ends with an error")


def _nrrd_field(line: bytes) -> tuple[str, bytes] | None:
    """(field, value) for a field line, None for a `key:=value` line, as teem's `_nrrdReadNrrdParseField` decides:
    a known field name before the first `: ` makes a field; otherwise `:=` before that point makes a key/value."""
    colon = line.find(b": ")
    before = line if colon < 0 else line[:colon]
    if colon >= 0:
        canonical = NRRD_FIELDS.get(before.lower().decode("latin-1"))
        if canonical is not None:
            return canonical, line[colon + 2 :]
    if b":=" in before:
        return None
    raise ExternalDataError(f"A NRRD header line is neither a field nor a key:=value pair: {line[:80]!r}.")


def _metaimage_header(head: bytes, name: str) -> ReadHeader:
    """MetaIO's header, read strictly: `Key = Value` lines ended by `\\n` (or `\\r\\n`), up to `ElementDataFile =
    LOCAL`, after which the data begins. Anything MetaIO might read another way (a `:` separator, a lone `\\r`, a long
    or unusual value) is refused rather than guessed."""
    kept, seen, position = [], set(), 0
    while True:
        end = head.find(b"\n", position)
        if end < 0 or end + 1 > MAX_HEADER_BYTES:
            raise _too_long(name) if len(head) > MAX_HEADER_BYTES else _metaimage_refused(name, "has no data line")
        line, position = head[position:end].removesuffix(b"\r"), end + 1
        if not line.strip():
            continue
        if CONTROL.search(line):
            raise _metaimage_refused(name, "has a control character in its header")
        key, separator, value = line.partition(b"=")
        key, value = key.strip(), value.strip()
        if not separator or b":" in key:
            raise _metaimage_refused(name, f"has a header line that is not 'Key = Value': {line[:80]!r}")
        if key == b"ElementDataFile":
            if value.upper() != b"LOCAL":
                raise _metaimage_refused(name, f"keeps its data elsewhere ({value[:80].decode('latin-1')!r})")
            return ReadHeader(b"".join(kept) + b"ElementDataFile = LOCAL\n", position)
        if key == b"HeaderSize":
            raise _metaimage_refused(name, "skips bytes before its data (HeaderSize)")
        if key.decode("latin-1") not in METAIMAGE_FIELDS:
            continue
        if key in seen or not METAIMAGE_VALUE.match(value):
            raise _metaimage_refused(name, f"has an unusual {key.decode()} field")
        seen.add(key)
        kept.append(key + b" = " + value + b"\n")


def _metaimage_refused(name: str, why: str) -> ExternalDataError:
    return ExternalDataError(
        f"The MetaImage file {name!r} {why}; send a single .mha file with its data inside (ElementDataFile = LOCAL)."
    )


def _too_long(name: str) -> ExternalDataError:
    return ExternalDataError(
        f"The header of {name!r} is longer than {MAX_HEADER_BYTES // 1024} KB; it is refused, not cut: a field after "
        "that point could not be checked."
    )

"""Which image format a file is, from its content, and which one ITK reader may read it.

Why content and not the name: ITK picks a reader by asking each one whether it can read the file, and some readers
decide by content and some by name. A file named `x.png` that holds another format could reach a reader nobody meant
to expose. So a file's format is read from its first bytes, its name must agree, and ITK (through SimpleITK) is then
given that one reader (`reader`), never its factory. The formats taken are the ones viewers send; none of their
readers follow a path named inside the file except NRRD's and MetaImage's, whose headers `self_contained` reads first.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from typing import Optional

import SimpleITK as sitk

from monailabel_app.imaging.invalid_image import InvalidImageError

SNIFF_BYTES = 1024


@dataclass(frozen=True)
class ImageFormat:
    name: str
    suffixes: tuple[str, ...]
    image_io: str  # the one ITK reader and writer for it (SimpleITK names ITK's ImageIO classes)

    def reader(self, path: str) -> sitk.ImageFileReader:
        """A reader of `path` that uses this format's ImageIO only."""
        reader = sitk.ImageFileReader()
        reader.SetImageIO(self.image_io)
        reader.SetFileName(path)
        return reader


PNG = ImageFormat("PNG", (".png",), "PNGImageIO")
JPEG = ImageFormat("JPEG", (".jpg", ".jpeg"), "JPEGImageIO")
BMP = ImageFormat("BMP", (".bmp",), "BMPImageIO")
TIFF = ImageFormat("TIFF", (".tif", ".tiff"), "TIFFImageIO")
NIFTI = ImageFormat("NIfTI", (".nii",), "NiftiImageIO")
NIFTI_GZ = ImageFormat("gzip-compressed NIfTI", (".nii.gz",), "NiftiImageIO")
NRRD = ImageFormat("NRRD", (".nrrd", ".seg.nrrd"), "NrrdImageIO")
METAIMAGE = ImageFormat("MetaImage", (".mha",), "MetaImageIO")
DICOM = ImageFormat("DICOM", (".dcm",), "GDCMImageIO")
FORMATS = (PNG, JPEG, BMP, TIFF, NIFTI, NIFTI_GZ, NRRD, METAIMAGE, DICOM)


class WrongFormatError(InvalidImageError):
    """The file's content is not what its name says, or no format this server takes."""


def format_of(path: str) -> ImageFormat:
    """The format of the file at `path`, read from its content; WrongFormatError when its name says otherwise or it
    is none of FORMATS. A `.nhdr` (a NRRD header whose data lives in other files) is no format taken."""
    name = os.path.basename(path)
    claimed = _claimed(name)
    with open(path, "rb") as stream:
        head = stream.read(SNIFF_BYTES)
    found = _sniff(head, path)
    if claimed is None:
        raise WrongFormatError(
            f"The file {name!r} has no image type this server takes; send one of: {', '.join(_all_suffixes())}."
        )
    if found is None:
        raise WrongFormatError(
            f"The file {name!r} is named as {claimed.name} but is not one: it is corrupt or another kind of file."
        )
    if found is not claimed:
        raise WrongFormatError(
            f"The file {name!r} is named as {claimed.name} but holds {found.name}; send it under its own type "
            f"({found.suffixes[0]})."
        )
    return found


def format_named(path: str) -> ImageFormat:
    """The format a file to be written is named as (a label's `.nii.gz`); ValueError for a name of none of FORMATS."""
    claimed = _claimed(os.path.basename(path))
    if claimed is None:
        raise ValueError(f"{os.path.basename(path)!r} names no image format; use one of {', '.join(_all_suffixes())}")
    return claimed


def _claimed(name: str) -> Optional[ImageFormat]:
    lower = name.lower()
    by_length = sorted(((s, f) for f in FORMATS for s in f.suffixes), key=lambda pair: len(pair[0]), reverse=True)
    for suffix, image_format in by_length:
        if lower.endswith(suffix):
            return image_format
    return None


def _all_suffixes() -> list[str]:
    return sorted(s for f in FORMATS for s in f.suffixes)


def _sniff(head: bytes, path: str) -> Optional[ImageFormat]:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"BM"):
        return BMP
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return TIFF
    if head.startswith(b"NRRD000") and head[7:8].isdigit():
        return NRRD
    if len(head) >= 132 and head[128:132] == b"DICM":
        return DICOM
    if _is_single_file_nifti(head):
        return NIFTI
    if head.startswith(b"\x1f\x8b") and _is_single_file_nifti(_gunzipped_head(path)):
        return NIFTI_GZ
    if _looks_like_metaimage(head):
        return METAIMAGE
    return None


def _is_single_file_nifti(head: bytes) -> bool:
    """NIfTI-1 (`n+1`) or NIfTI-2 (`n+2`) with its data in the same file; `ni1`/`ni2` name a separate `.img`."""
    nifti1 = len(head) >= 348 and head[344:348] == b"n+1\x00" and head[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c")
    nifti2 = len(head) >= 12 and head[4:12] == b"n+2\x00\r\n\x1a\n"
    return nifti1 or nifti2


def _gunzipped_head(path: str) -> bytes:
    """The first bytes of a gzip file's content (never more: a gzip bomb is not unpacked)."""
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        return b""


def _looks_like_metaimage(head: bytes) -> bool:
    """MetaImage has no magic number: a text header whose first field is one MetaIO writes first."""
    first = head.lstrip(b" \t\r\n").split(b"=", 1)[0].strip()
    return first in (b"ObjectType", b"NDims", b"Comment")

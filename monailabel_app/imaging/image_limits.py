"""Checks an image file from its header before a single pixel is decoded: size limits, pixel type, no references out.

Why before decoding: a 69-byte PNG can declare 32768 x 32768 pixels, and decoding it takes gigabytes (a decompression
bomb); a NRRD or MetaImage header can name a *detached* data file anywhere on the server's disk, which the reader would
open. So every file is read here first: its format from its content (`file_formats`), its NRRD or MetaImage header by
the format's own rules (`self_contained`), then its size with the header-only reader of that one format (the same
library that decodes it later), and refused with a message when it is too large, of a pixel type the app can't use,
or refers to another file. A DICOM series folder is checked from its files' headers (pydicom, pixels not read).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import SimpleITK as sitk

from monailabel_app.imaging.file_formats import NRRD, TIFF, ImageFormat, format_of
from monailabel_app.imaging.invalid_image import InvalidImageError, first_line
from monailabel_app.imaging.self_contained import check_self_contained
from monailabel_app.imaging.series_checks import GEOMETRY_TAGS, check_slice_geometry

__all__ = [
    "ImageHeader",
    "ImageLimits",
    "ImageTooLargeError",
    "InvalidImageError",
    "check_file_of_format",
    "check_image_file",
    "check_shape",
]

# NRRD axis kinds (teem's): the spatial ones, and those of an axis whose values make a colour or plain vector pixel
SPATIAL_NRRD_KINDS = ("domain", "space", "time")
VECTOR_NRRD_KINDS = (
    *("rgb-color", "rgba-color", "3-color", "4-color"),
    *("vector", "list", "2-vector", "3-vector", "4-vector"),
)
USABLE_PIXEL_TYPES = ("scalar", "vector")  # vector (RGB among them): a volume's is refused later, said more clearly


class ImageTooLargeError(InvalidImageError):
    """The header declares more pixels than the server's limit; the message names both."""


@dataclass(frozen=True)
class ImageLimits:
    """Documented defaults: a 2D picture up to 40 megapixels (a 6,300 x 6,300 radiograph; mammograms are ~25 MP), a
    volume up to 400 million voxels (e.g. 512 x 512 x 1,500 slices), at most 1 GiB of decoded pixels (a 512 x 512 x
    2,000 CT in int16; the same voxels in float64 would be 4 GiB), a DICOM series of up to 3,000 files."""

    max_pixels_2d: int = 40_000_000
    max_voxels_3d: int = 400_000_000
    max_decoded_bytes: int = 1 << 30
    max_series_files: int = 3_000


@dataclass(frozen=True)
class ImageHeader:
    size: tuple[int, ...]  # ITK order: x, y[, z]
    components: int
    pixel_type: str  # scalar, vector (several values a pixel: RGB, RGBA, ...) or complex
    component_bytes: int = 1

    @property
    def decoded_bytes(self) -> int:
        return math.prod(self.size) * self.components * self.component_bytes


def check_image_file(path: str, limits: ImageLimits = ImageLimits()) -> ImageHeader:
    """The header of a file (or of a DICOM series folder), if the app may decode it; else a RequestError."""
    if os.path.isdir(path):
        return _check_dicom_folder(path, limits)
    if not os.path.isfile(path):
        raise InvalidImageError(f"Image not found: {os.path.basename(path)!r}")
    return check_file_of_format(path, format_of(path), limits)  # its format from its content; the name must agree


def check_file_of_format(path: str, image_format: ImageFormat, limits: ImageLimits = ImageLimits()) -> ImageHeader:
    """`check_image_file` for a file whose format the caller has already read (`format_of`): not read twice."""
    check_self_contained(path, image_format)
    pages = _tiff_pages(path) if image_format is TIFF else set()  # first: ITK's reader never returns from a loop
    header = _read_header(path, image_format)
    if header.pixel_type not in USABLE_PIXEL_TYPES:
        raise InvalidImageError(
            f"The image {os.path.basename(path)!r} has {header.pixel_type} pixels; send grey, RGB or RGBA pixels."
        )
    check_shape(len(header.size), header.components)
    _check_size(header.size, limits, os.path.basename(path))
    _check_bytes(header, limits, os.path.basename(path))
    if len(header.size) == 3 and len(pages) > 1:
        raise InvalidImageError(
            f"The TIFF {os.path.basename(path)!r} has pages of different sizes, pixel types or kinds (e.g. a "
            "thumbnail), or pages that can't be read, so they are not one volume; send one picture, or a stack whose "
            "pages all match."
        )
    return header


def check_shape(dimension: int, components: int) -> None:
    """A 2D picture (grey, RGB or RGBA) or a 3D scalar volume: the one rule, applied to a file's header before its
    pixels are decoded (a 4D series or a vector volume is never decoded) and to what a DICOM series decodes to."""
    if dimension not in (2, 3):
        raise InvalidImageError(f"{dimension}D images are not supported: send a 2D image or a 3D volume.")
    if dimension == 3 and components != 1:
        raise InvalidImageError(
            f"This volume has {components} values per voxel (a 4D or vector image); send one 3D scalar volume, "
            "e.g. a single time point or channel."
        )
    if dimension == 2 and components not in (1, 3, 4):
        raise InvalidImageError(f"2D images need 1 (grey), 3 (RGB) or 4 (RGBA) channels, not {components}.")


def _check_size(size: tuple[int, ...], limits: ImageLimits, name: str) -> None:
    """A slice of a volume is a picture too (each is framed and encoded as one): a 2D picture stored as a one-slice
    volume is held to the picture limit, not only to the far larger volume limit."""
    count, in_plane = math.prod(size), math.prod(size[:2])
    if in_plane > limits.max_pixels_2d:
        slice_of = "" if len(size) <= 2 else f"each slice of {' x '.join(map(str, size))}: "
        raise ImageTooLargeError(
            f"The image {name!r} declares {slice_of}{' x '.join(map(str, size[:2]))} = {in_plane:,} pixels; this "
            f"server accepts 2D images and slices up to {limits.max_pixels_2d:,} pixels (--conf max_image_pixels)."
        )
    if len(size) > 2 and count > limits.max_voxels_3d:
        raise ImageTooLargeError(
            f"The volume {name!r} declares {' x '.join(map(str, size))} = {count:,} voxels; this server accepts "
            f"volumes up to {limits.max_voxels_3d:,} voxels (--conf max_volume_voxels)."
        )


def _check_bytes(header: ImageHeader, limits: ImageLimits, name: str) -> None:
    """A few MB of compressed float64 can declare gigabytes of pixels within the voxel limit."""
    if header.decoded_bytes > limits.max_decoded_bytes:
        raise ImageTooLargeError(
            f"The image {name!r} decodes to {header.decoded_bytes / 2**20:,.0f} MB ({' x '.join(map(str, header.size))}"
            f" x {header.components} x {header.component_bytes} bytes); this server decodes at most "
            f"{limits.max_decoded_bytes / 2**20:,.0f} MB (--conf max_decoded_mb)."
        )


def _read_header(path: str, image_format: ImageFormat) -> ImageHeader:
    reader = image_format.reader(path)  # that format's reader only, never ITK's pick by content or name
    try:
        reader.ReadImageInformation()
        pixel_id = reader.GetPixelID()
    except Exception as error:  # ITK raises bare RuntimeErrors for every header problem
        raise InvalidImageError(
            f"Could not read the header of {os.path.basename(path)!r}: it is corrupt, or its pixels are of a kind "
            f"this server does not read (e.g. grey with alpha, tensors); send grey, RGB or RGBA pixels. Reader said: "
            f"{first_line(error)}"
        ) from error
    components = int(reader.GetNumberOfComponents())
    described = sitk.GetPixelIDValueAsString(pixel_id)  # "vector of 16-bit signed integer", "complex of 32-bit float"
    if described.startswith("complex"):
        pixel_type = "complex"
    elif components == 1:
        pixel_type = "scalar"
    else:
        pixel_type = _nrrd_pixel_kind(path) if image_format is NRRD else "vector"
    bits = re.search(r"(\d+)-bit", described)
    component_bytes = int(bits.group(1)) // 8 if bits else 8
    return ImageHeader(tuple(int(v) for v in reader.GetSize()), components, pixel_type, component_bytes)


# What ITK takes from a multi-page TIFF's first page for every page (size, pixel layout, orientation, tiling) and which
# pages it stacks (NewSubfileType: mixed kinds, e.g. a thumbnail before the pages or one page tagged and the others
# not, made it write pages past the end of its buffer and crash the process), with TIFF's defaults for absent tags.
TIFF_PAGE_TAGS = {
    256: None,  # ImageWidth
    257: None,  # ImageLength
    258: (1,),  # BitsPerSample
    277: (1,),  # SamplesPerPixel
    339: (1,),  # SampleFormat
    262: None,  # PhotometricInterpretation
    284: (1,),  # PlanarConfiguration
    274: (1,),  # Orientation
    322: None,  # TileWidth
    323: None,  # TileLength
    254: None,  # NewSubfileType
}


def _tiff_pages(path: str) -> set:
    """The layouts of a TIFF's pages (`TIFF_PAGE_TAGS`): one, when they make a volume ITK reads as it is. ITK reads a
    multi-page TIFF as a volume of its first page's size and type: a page of another size or type was read as
    garbage, a page of another kind past the volume's buffer. Only the pages' directories are read (Pillow's
    directory reader, not its image decoder: ITK reads pixel types Pillow has no mode for), never their pixels."""
    from PIL.TiffImagePlugin import ImageFileDirectory_v2

    name = os.path.basename(path)
    try:
        with open(path, "rb") as stream:
            header = stream.read(16)
            directory = ImageFileDirectory_v2(prefix=header[:2])  # Pillow 11 takes a big-endian BigTIFF for classic
            order = "little" if header[:2] == b"II" else "big"
            directory._bigtiff = big = int.from_bytes(header[2:4], order) == 43  # as Pillow's own writer sets it
            count_bytes, entry_bytes = (8, 20) if big else (2, 12)
            offset = int.from_bytes(header[8:16] if big else header[4:8], order)
            layouts, visited = set(), set()
            while offset:
                if offset in visited:
                    raise InvalidImageError(f"The TIFF {name!r} is corrupt: its pages' directories form a loop.")
                visited.add(offset)
                stream.seek(offset)  # the next directory's offset follows the entries (0 past the end: none)
                stream.seek(offset + count_bytes + entry_bytes * int.from_bytes(stream.read(count_bytes), order))
                following = int.from_bytes(stream.read(count_bytes if big else 4), order)
                stream.seek(offset)
                directory.next = None  # set only when the whole directory was read
                directory.load(stream)
                values = (directory.get(tag, default) for tag, default in TIFF_PAGE_TAGS.items())
                layout = tuple(value if isinstance(value, tuple) or value is None else (value,) for value in values)
                layouts.add(layout if directory.next is not None else ("unreadable", offset))
                offset = following
    except InvalidImageError:
        raise
    except Exception as error:  # Pillow raises many kinds for broken directories
        raise InvalidImageError(
            f"Could not read the pages of {name!r}: the TIFF is corrupt ({first_line(error)})."
        ) from error
    return layouts


def _nrrd_pixel_kind(path: str) -> str:
    """A NRRD's several values a pixel are colour or a plain vector only when its non-spatial axis says so: a
    covariant vector, a point or a tensor field is no picture (read as one, it would be shown and grounded as colour).
    The header was checked by `self_contained` before; pynrrd reads its fields and nothing else."""
    import nrrd

    kinds = [str(kind).lower() for kind in (nrrd.read_header(path).get("kinds") or [])]
    values = [kind for kind in kinds if kind not in SPATIAL_NRRD_KINDS]
    return "vector" if all(kind in VECTOR_NRRD_KINDS for kind in values) else values[0]


def _check_dicom_folder(folder: str, limits: ImageLimits) -> ImageHeader:
    """A series folder: regular files only (no links, no sub-folders), bounded count and voxels, one series on one
    regular grid (`series_checks.py`: GDCM stacks what it gets, so a missing slice or a duplicate would warp the
    volume), from headers read once."""
    import pydicom

    names = sorted(os.listdir(folder))
    if not names:
        raise InvalidImageError("The DICOM series folder is empty.")
    if len(names) > limits.max_series_files:
        raise ImageTooLargeError(
            f"The series has {len(names):,} files; this server accepts up to {limits.max_series_files:,}."
        )
    voxels, rows, columns, sample_bytes = 0, 0, 0, 1
    layouts: dict[str, set[tuple[int, ...]]] = {}  # per series: the slices' (rows, columns, bits, samples)
    headers = []
    for name in names:
        path = os.path.join(folder, name)
        if os.path.islink(path) or not os.path.isfile(path) or name.upper() == "DICOMDIR":
            raise InvalidImageError(f"The DICOM series folder holds {name!r}, which is not a plain DICOM file.")
        try:
            tags = ["NumberOfFrames", "BitsAllocated", "SamplesPerPixel", "SeriesInstanceUID", *GEOMETRY_TAGS]
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
            headers.append(header)
            rows, columns = int(header.Rows), int(header.Columns)
            frames = int(getattr(header, "NumberOfFrames", 1) or 1)
            samples = int(getattr(header, "SamplesPerPixel", 1) or 1)
            bits = int(getattr(header, "BitsAllocated", 8) or 8)
            sample_bytes = max(sample_bytes, samples * max(1, bits // 8))
            layouts.setdefault(str(getattr(header, "SeriesInstanceUID", "")), set()).add((rows, columns, bits, samples))
        except Exception as error:  # pydicom raises many kinds for broken files
            raise InvalidImageError(f"{name!r} in the DICOM series is not a readable DICOM image.") from error
        voxels += rows * columns * frames
    if len(layouts) > 1:  # GDCM would read one of them and say nothing of the others
        raise InvalidImageError(
            f"The DICOM series folder holds {len(layouts)} series (SeriesInstanceUID); send one series per folder."
        )
    if any(len(layout) > 1 for layout in layouts.values()):
        # the reader would cast every slice to the first one's type (16-bit values into 8 bits) or stack a misfit
        raise InvalidImageError(
            "The DICOM series mixes slices of different sizes or pixel formats (rows, columns, bits allocated, "
            "samples per pixel); its slices must all be alike. Send the series as the scanner made it."
        )
    check_slice_geometry(headers)
    size = (columns, rows, max(1, voxels // max(1, rows * columns)))
    name = os.path.basename(folder.rstrip(os.sep)) or "series"
    _check_size(size, limits, name)
    header = ImageHeader(size, 1, "scalar", sample_bytes)
    _check_bytes(header, limits, name)
    return header

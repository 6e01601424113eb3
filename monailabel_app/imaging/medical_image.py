"""Reading a 2D image or a 3D volume with its geometry, and writing a label back on exactly that geometry.

ITK's file readers do the formats (PNG/JPG/BMP/TIFF, NIfTI, NRRD, MHA, a DICOM series folder), so spacing, origin
and direction travel from input to label untouched. They are driven through SimpleITK, not ITK's own Python wrapping:
the same readers and writers, but one compiled module (0.1 s to import) where ITK's wrapping loads some 550 Python
modules on its first read (2.4 to 3.1 s measured on this project's 2-core machine, paid by a server's first answer).
Arrays follow ITK's numpy view: (y, x) for 2D, (z, y, x) for volumes; a pixel (x, y) on slice k of a volume is the voxel
index (i, j, k) = (x, y, k), the same IJK that 3D Slicer shows.
"""

from __future__ import annotations

import gzip
import os
import threading
from dataclasses import dataclass
from typing import Optional

import nibabel
import numpy as np
import SimpleITK as sitk

from monailabel_app.imaging.file_formats import DICOM, NIFTI, NIFTI_GZ, ImageFormat, format_named, format_of
from monailabel_app.imaging.image_limits import ImageLimits, check_file_of_format, check_image_file, check_shape
from monailabel_app.imaging.invalid_image import InvalidImageError, first_line

MAX_CONCURRENT_DECODES = 2
# Decoding takes about twice an image's decoded size (ITK's buffer, then the array copy), up to 2 GiB each under the
# default limits: at most two at once in a process, whatever the number of requests in flight.
_DECODING = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)


@dataclass(frozen=True)
class ImageGrid:
    """Where the pixels lie, in ITK's (x, y[, z]) order: what a label written for the image must carry. Kept without
    the pixels (the array has them): a volume is held once, not twice."""

    dimension: int
    components: int  # values per pixel: 1 grey or scalar, 3 RGB, ...
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]  # row-major dimension x dimension

    @classmethod
    def of(cls, image: sitk.Image) -> "ImageGrid":
        return cls(
            image.GetDimension(),
            image.GetNumberOfComponentsPerPixel(),
            tuple(float(v) for v in image.GetSpacing()),
            tuple(float(v) for v in image.GetOrigin()),
            tuple(float(v) for v in image.GetDirection()),
        )

    def place(self, image: sitk.Image) -> sitk.Image:
        """`image` (same size) given this grid's spacing, origin and direction."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


@dataclass
class MedicalImage:
    """`array` is (H, W) or (H, W, 3) for 2D images, (Z, Y, X) for scalar volumes; `grid` keeps the geometry."""

    array: np.ndarray
    grid: ImageGrid
    path: str

    @property
    def is_volume(self) -> bool:
        return self.grid.dimension == 3

    @property
    def num_slices(self) -> int:
        return self.array.shape[0] if self.is_volume else 1

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """The array's shape without the colour axis: (H, W) or (Z, Y, X), the shape a label has."""
        return self.array.shape[: self.grid.dimension]

    def geometry(self) -> dict:
        """Spacing, origin and direction as plain lists (for results and for tests)."""
        dimension = self.grid.dimension
        return {
            "spacing": list(self.grid.spacing),
            "origin": list(self.grid.origin),
            "direction": np.reshape(self.grid.direction, (dimension, dimension)).tolist(),
        }


def read_medical_image(path: str, limits: ImageLimits = ImageLimits()) -> MedicalImage:
    """Read a file or a DICOM series folder; RGBA becomes RGB (alpha dropped), other shapes are refused clearly.

    The header is checked first (`image_limits`): sizes over `limits`, complex pixels and files that point at other
    files are refused before any pixel is decoded."""
    if not path or not os.path.exists(path):
        raise InvalidImageError(f"Image not found: {os.path.basename(str(path))!r}")
    if os.path.isdir(path):
        image_format = None
        check_image_file(path, limits)
    else:
        image_format = format_of(path)  # read once: the checks and the decode use it
        if image_format in (NIFTI, NIFTI_GZ):
            _require_complete_nifti(path)  # first: its message ("truncated") says more than a failed header read
        check_file_of_format(path, image_format, limits)
    with _DECODING:
        return _decode(path, image_format)


def _decode(path: str, image_format: Optional[ImageFormat]) -> MedicalImage:
    """A file with the one reader of its format, never ITK's pick; a folder as a DICOM series (GDCM lists the files
    it parsed as DICOM, and each upload in it was checked as DICOM from its content)."""
    try:
        image = image_format.reader(path).Execute() if image_format else _read_series(path)
    except InvalidImageError:
        raise
    except Exception as error:  # ITK raises bare RuntimeErrors for every format problem
        raise InvalidImageError(
            f"Could not read the image {os.path.basename(path)!r}: it is corrupt, truncated, or not a supported "
            f"format (2D PNG/JPG/BMP/TIFF, NIfTI, NRRD, MHA, or a DICOM series). Reader said: {first_line(error)}"
        ) from error
    dimension = image.GetDimension()
    components = image.GetNumberOfComponentsPerPixel()
    check_shape(dimension, components)  # a file's header said so already; a DICOM series' pixels say it here
    # a copy, not SimpleITK's array view: a view dangles (and reads freed memory) once its image is garbage-collected
    array = sitk.GetArrayFromImage(image)
    if dimension == 2 and components == 4:
        array = array[..., :3]
    in_plane = array.shape[dimension - 2 : dimension]  # (y, x): a volume of one slice is still a picture to ground
    if array.size == 0 or min(in_plane) < 2:
        raise InvalidImageError(f"The image is too small to ground anything in: shape {list(array.shape)}.")
    return MedicalImage(array=np.ascontiguousarray(array), grid=ImageGrid.of(image), path=path)


def _read_series(folder: str) -> sitk.Image:
    """The folder's first DICOM series, its slices in GDCM's order along the slice normal. Series are told apart by
    GDCM's series details (UID, number, sequence name, slice thickness, rows, columns), not by SeriesDate as ITK's
    `imread` of a folder also did, which read half a series whose slices carried two dates."""
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, useSeriesDetails=True)
    if not names:
        raise InvalidImageError("The DICOM series folder holds no DICOM series GDCM can read.")
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO(DICOM.image_io)
    reader.SetFileNames(names)
    return reader.Execute()


def write_label(label: np.ndarray, like: MedicalImage, path: str, compress: bool = True) -> str:
    """Write `label` ((H, W) or (Z, Y, X), same shape as `like`'s grid) with `like`'s spacing, origin, direction, in
    the format its name says (the one writer of that format, as for reading)."""
    if label.shape != like.grid_shape:
        raise ValueError(f"label shape {label.shape} does not match the image grid {like.grid_shape}")
    label_image = like.grid.place(sitk.GetImageFromArray(np.ascontiguousarray(label)))
    sitk.WriteImage(label_image, path, useCompression=compress, imageIO=format_named(path).image_io)
    return path


def _require_complete_nifti(path: str) -> None:
    """ITK's NIfTI reader fills a truncated file's missing voxels silently; a short file must be refused instead."""
    try:
        header = nibabel.load(path).header
        expected = (
            int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
        )
        if path.lower().endswith(".gz"):
            actual = 0
            with gzip.open(path, "rb") as stream:  # up to the expected size only: a gzip bomb is not unpacked whole
                while actual < expected:
                    chunk = stream.read(min(1 << 22, expected - actual))
                    if not chunk:
                        break
                    actual += len(chunk)
        else:
            actual = os.path.getsize(path)
    except Exception as error:  # nibabel and gzip raise many kinds for broken files
        raise InvalidImageError(
            f"Could not read the NIfTI file {os.path.basename(path)!r}: it is corrupt or truncated "
            f"({first_line(error)})."
        ) from error
    if actual < expected:
        raise InvalidImageError(
            f"The NIfTI file {os.path.basename(path)!r} is truncated: {actual} of {expected} bytes. Upload it again."
        )

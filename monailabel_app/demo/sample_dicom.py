"""DICOM series made in code (pydicom) with known geometry: a CT and an MR volume, a 2D DX/CR radiograph. No patient
data. The default start loads them into its local PACS (`local_pacs.py`); the PACS tests use them (and break them).

Geometry is written the DICOM way (ImagePositionPatient per slice, ImageOrientationPatient, PixelSpacing as
[between rows, between columns]) and also given ITK's way (origin, spacing x/y/z, direction columns) so a test can
check what the server made of it. The MR is sagittal so orientation bugs show; slices are written in shuffled order.
The flipped CT (`FLIPPED_CT_GEOMETRY`, numbered from the far end) is the CT with its slice normal pointing down and its
instance numbers counting against it, as a feet-first series can come: what a viewer's slice order must survive. Both
come with an odd number of slices too (`ODD_SLICES`): a viewer opens an even series between its two middle slices and
an odd one on its middle slice, so a slice named by its mirror image can hide on the one and show on the other.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Sequence

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from monailabel_app.demo.sample_studies import CT_LESION, Lesion, ct_slice, ct_volume, xray_picture

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
}


@dataclass(frozen=True)
class SeriesGeometry:
    rows: int
    columns: int
    slices: int
    row_spacing: float  # mm between rows (y)
    column_spacing: float  # mm between columns (x)
    slice_spacing: float
    row_cosine: Sequence[float] = (1.0, 0.0, 0.0)  # direction of increasing column index
    column_cosine: Sequence[float] = (0.0, 1.0, 0.0)  # direction of increasing row index
    origin: Sequence[float] = (0.0, 0.0, 0.0)  # centre of the first voxel of slice 0, LPS mm

    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)

    def position(self, k: int) -> List[float]:
        return [float(v) for v in np.asarray(self.origin) + k * self.slice_spacing * self.normal()]

    def itk_spacing(self) -> tuple:
        return (self.column_spacing, self.row_spacing, self.slice_spacing)

    def itk_direction(self) -> np.ndarray:
        return np.column_stack([self.row_cosine, self.column_cosine, self.normal()])


@dataclass
class Series:
    modality: str
    study_uid: str
    series_uid: str
    geometry: SeriesGeometry
    pixels: np.ndarray  # (z, y, x) stored values
    files: List[Path] = field(default_factory=list)
    description: str = ""  # SeriesDescription; "Synthetic <modality>" when empty


CT_GEOMETRY = SeriesGeometry(96, 128, 12, 0.8, 0.75, 2.5, origin=(-48.0, -38.4, 102.5))
# rows run posterior -> anterior, so the normal (row x column) points to the feet; slice 0 is the top one
FLIPPED_CT_GEOMETRY = SeriesGeometry(
    96, 128, 12, 0.8, 0.75, 2.5, column_cosine=(0.0, -1.0, 0.0), origin=(-48.0, 38.4, 130.0)
)
FLIPPED_CT = "Synthetic CT, feet first"
ODD_SLICES = 13
ODD_CT = f"Synthetic CT, {ODD_SLICES} slices"  # in the default start's local PACS beside the CT, MR and DX
MR_GEOMETRY = SeriesGeometry(
    80, 64, 10, 1.1, 0.9, 3.0, row_cosine=(0.0, 1.0, 0.0), column_cosine=(0.0, 0.0, -1.0), origin=(-13.5, -35.0, 40.0)
)
XRAY_SHAPE = xray_picture().shape
XRAY_GEOMETRY = SeriesGeometry(XRAY_SHAPE[0], XRAY_SHAPE[1], 1, 0.143, 0.143, 1.0)
MR_LESION = Lesion(cx=40, cy=30, rx=8, ry=10)


def mr_volume(seed: int = 3) -> np.ndarray:
    """(z, y, x) uint16 MR-like signal: a grey body, a bright lesion on the middle slices, Rician-ish noise."""
    rng = np.random.default_rng(seed)
    z, y, x = MR_GEOMETRY.slices, MR_GEOMETRY.rows, MR_GEOMETRY.columns
    volume = np.full((z, y, x), 20.0)
    body = Lesion(x / 2, y / 2, x * 0.42, y * 0.45).mask(y, x)
    for k in range(z):
        volume[k][body] = 300.0
        if abs(k - z // 2) <= 2:
            volume[k][MR_LESION.mask(y, x)] = 900.0
    return np.abs(volume + rng.normal(0, 15, volume.shape)).round().astype(np.uint16)


def _base_dataset(series: Series, number: int, sop_uid: str, path: Path) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[series.modality]
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    today = datetime.date.today().strftime("%Y%m%d")
    ds.SOPClassUID, ds.SOPInstanceUID = SOP_CLASSES[series.modality], sop_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synthetic^Phantom", "MEDREASONER-TEST", "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = series.study_uid, series.series_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.Modality, ds.Manufacturer = series.modality, "MedReasoner synthetic"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.StudyDescription = f"Synthetic {series.modality} study"
    ds.SeriesDescription = series.description or f"Synthetic {series.modality}"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = series.geometry.rows, series.geometry.columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    return ds


def _write_volume(
    series: Series, folder: Path, signed: bool, orientation_of=lambda k, g: g, numbered_from_the_far_end: bool = False
) -> Series:
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(0).permutation(series.geometry.slices)  # shuffled on disk and in the PACS
    frame_of_reference = generate_uid()
    for k in order:
        geometry = orientation_of(int(k), series.geometry)
        sop_uid = generate_uid()
        path = folder / f"{series.modality}_{k:03d}.dcm"
        number = series.geometry.slices - int(k) if numbered_from_the_far_end else int(k) + 1
        ds = _base_dataset(series, number, sop_uid, path)
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_reference, ""
        ds.ImagePositionPatient = geometry.position(int(k))
        ds.ImageOrientationPatient = [float(v) for v in (*geometry.row_cosine, *geometry.column_cosine)]
        ds.PixelSpacing = [geometry.row_spacing, geometry.column_spacing]
        ds.SliceThickness = geometry.slice_spacing
        ds.SliceLocation = float(np.dot(geometry.position(int(k)), geometry.normal()))
        ds.PixelRepresentation = 1 if signed else 0
        if series.modality == "CT":
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
            ds.KVP, ds.WindowCenter, ds.WindowWidth = 120, 40, 400
        else:
            ds.MagneticFieldStrength, ds.EchoTime, ds.RepetitionTime = 1.5, 10, 500
            ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "SE", "NONE", "2D"
        ds.PixelData = series.pixels[k].astype(np.int16 if signed else np.uint16).tobytes()
        ds.save_as(path, write_like_original=False)
        series.files.append(path)
    return series


def ct_series(folder: Path, geometry: SeriesGeometry = CT_GEOMETRY) -> Series:
    series = Series("CT", generate_uid(), generate_uid(), geometry, ct_volume())
    return _write_volume(series, Path(folder), signed=True)


def flipped_ct_series(folder: Path) -> Series:
    """The CT feet first: InstanceNumber 1 is the last slice along the normal (ITK's and the server's last)."""
    series = Series("CT", generate_uid(), generate_uid(), FLIPPED_CT_GEOMETRY, ct_volume(), description=FLIPPED_CT)
    return _write_volume(series, Path(folder), signed=True, numbered_from_the_far_end=True)


def odd_ct_series(folder: Path, feet_first: bool = False) -> Series:
    """The CT with `ODD_SLICES` slices (its lesion on the middle seven), head first as `ct_series` or feet first as
    `flipped_ct_series`."""
    geometry = replace(FLIPPED_CT_GEOMETRY if feet_first else CT_GEOMETRY, slices=ODD_SLICES)
    description = f"{FLIPPED_CT}, {ODD_SLICES} slices" if feet_first else ODD_CT
    pixels = np.stack(
        [
            ct_slice(k, lesion=CT_LESION if abs(k - ODD_SLICES // 2) <= 3 else Lesion(-99, -99, 1, 1))
            for k in range(ODD_SLICES)
        ]
    )
    series = Series(
        "CT", generate_uid(), generate_uid(), geometry, pixels.round().astype(np.int16), description=description
    )
    return _write_volume(series, Path(folder), signed=True, numbered_from_the_far_end=feet_first)


def mr_series(folder: Path) -> Series:
    series = Series("MR", generate_uid(), generate_uid(), MR_GEOMETRY, mr_volume())
    return _write_volume(series, Path(folder), signed=False)


def xray_series(folder: Path, modality: str = "DX") -> Series:
    """One projection radiograph: PixelSpacing (calibrated at the detector, as ImagerPixelSpacing), no position."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    picture = xray_picture().astype(np.uint16) * 16  # 12-bit detector values
    series = Series(modality, generate_uid(), generate_uid(), XRAY_GEOMETRY, picture[None])
    path = folder / f"{modality}.dcm"
    ds = _base_dataset(series, 1, generate_uid(), path)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    spacing = [XRAY_GEOMETRY.row_spacing, XRAY_GEOMETRY.column_spacing]
    ds.PixelSpacing = ds.ImagerPixelSpacing = spacing
    ds.PatientOrientation, ds.ViewPosition, ds.BodyPartExamined = ["L", "F"], "PA", "CHEST"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.WindowCenter, ds.WindowWidth = 2000, 4000
    ds.PixelData = picture.tobytes()
    ds.save_as(path, write_like_original=False)
    series.files.append(path)
    return series


def main() -> None:
    """`python -m monailabel_app.demo.sample_dicom DIR`: a CT, an MR and a DX series to try a PACS with."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path)
    folder = parser.parse_args().folder
    for one in (ct_series(folder / "ct"), mr_series(folder / "mr"), xray_series(folder / "dx")):
        print(f"{one.modality}: {len(one.files)} files in {one.files[0].parent}, SeriesInstanceUID {one.series_uid}")


if __name__ == "__main__":
    main()

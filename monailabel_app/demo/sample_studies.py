"""Synthetic studies made in code, for the demo server and the tests (no patient data, nothing downloaded).

`python -m monailabel_app.demo.sample_studies DIR` writes a CT-like NIfTI volume with a bright lesion (non-trivial
spacing, origin and direction, so geometry bugs show), a grey 2D radiograph-like PNG and an RGB endoscopy-like PNG.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

CT_SHAPE = (12, 96, 128)  # (z, y, x)
CT_SPACING = (0.75, 0.8, 2.5)  # (x, y, z) mm, ITK order
CT_ORIGIN = (-48.0, -38.4, 102.5)
CT_DIRECTION = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])  # LPS-flipped in-plane, as many scanners


@dataclass
class Lesion:
    """An ellipse (2D) or elliptic cylinder (3D) in pixel/voxel indices: centre (x, y), radii (rx, ry)."""

    cx: float
    cy: float
    rx: float
    ry: float

    def mask(self, height: int, width: int) -> np.ndarray:
        y, x = np.mgrid[0:height, 0:width]
        return ((x - self.cx) / self.rx) ** 2 + ((y - self.cy) / self.ry) ** 2 <= 1.0

    def box(self) -> tuple[float, float, float, float]:
        return self.cx - self.rx, self.cy - self.ry, self.cx + self.rx, self.cy + self.ry


CT_LESION = Lesion(cx=80, cy=40, rx=12, ry=9)
XRAY_LESION = Lesion(cx=150, cy=90, rx=22, ry=18)


def ct_slice(seed: int = 0, height: int = CT_SHAPE[1], width: int = CT_SHAPE[2], lesion: Lesion = CT_LESION):
    """One CT-like slice in HU: air, a soft-tissue body ellipse, noise, and a contrast-enhancing lesion."""
    rng = np.random.default_rng(seed)
    hu = np.full((height, width), -1000.0, dtype=np.float32)
    body = Lesion(width / 2, height / 2, width * 0.45, height * 0.42).mask(height, width)
    hu[body] = 40.0
    hu[lesion.mask(height, width)] = 220.0
    hu += rng.normal(0.0, 12.0, hu.shape).astype(np.float32)
    return hu


def ct_volume(seed: int = 0) -> np.ndarray:
    """(z, y, x) int16 HU; the lesion is present on the middle slices only."""
    depth = CT_SHAPE[0]
    slices = [
        ct_slice(seed + k, lesion=CT_LESION if abs(k - depth // 2) <= 3 else Lesion(-99, -99, 1, 1))
        for k in range(depth)
    ]
    return np.stack(slices).round().astype(np.int16)


def ellipsoid_ct(
    slices: int = 16, key: int = 7, half_depth: float = 5, centre=(70.0, 50.0), radii=(16.0, 12.0), seed: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """(z, y, x) HU and its truth mask: an ellipsoid lesion centred on slice `key`, its cross-section shrinking towards
    its ends (slices key - half_depth + 1 to key + half_depth - 1), for carrying an answer through a volume."""
    volume, truth = [], []
    for k in range(slices):
        shrink = 1.0 - ((k - key) / half_depth) ** 2
        lesion = Lesion(-99, -99, 1, 1)
        if shrink > 0:
            lesion = Lesion(centre[0], centre[1], radii[0] * np.sqrt(shrink), radii[1] * np.sqrt(shrink))
        volume.append(ct_slice(seed + k, lesion=lesion))
        truth.append(lesion.mask(*volume[-1].shape))
    return np.stack(volume), np.stack(truth)


def write_ct(path: Path, seed: int = 0) -> Path:
    image = sitk.GetImageFromArray(ct_volume(seed))
    image.SetSpacing(CT_SPACING)
    image.SetOrigin(CT_ORIGIN)
    image.SetDirection(CT_DIRECTION.flatten().tolist())
    sitk.WriteImage(image, str(path))
    return path


def xray_picture(seed: int = 1, height: int = 180, width: int = 240) -> np.ndarray:
    """A grey 8-bit radiograph-like picture with a bright round opacity."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    picture = 60 + 50 * np.exp(-(((x - width / 2) / (width / 3)) ** 2)) + rng.normal(0, 6, (height, width))
    picture[XRAY_LESION.mask(height, width)] = 220
    return np.clip(picture, 0, 255).astype(np.uint8)


def endoscopy_picture(seed: int = 2, height: int = 160, width: int = 200) -> np.ndarray:
    """An RGB picture: pink mucosa with a darker red polyp-like blob."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((height, width, 3), dtype=np.float32)
    rgb[...] = (200, 120, 110)
    rgb[Lesion(120, 70, 25, 20).mask(height, width)] = (150, 40, 40)
    rgb += rng.normal(0, 5, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_png(picture: np.ndarray, path: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(picture, isVector=picture.ndim == 3), str(path))
    return path


def write_sample_studies(folder: Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_ct(folder / "ct_chest_lesion.nii.gz"),
        write_png(xray_picture(), folder / "xray_opacity.png"),
        write_png(endoscopy_picture(), folder / "endoscopy_polyp.png"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    for path in write_sample_studies(parser.parse_args().folder):
        print(path)


if __name__ == "__main__":
    main()

"""Test support: small generated grounding data sets, as GroundingSamples (write them as a folder with
`folder_samples.write_folder_dataset`, as a U-MRG parquet with `umrg_parquet.write_umrg_parquet`).

Several questions share each picture (as in U-MRG, where a picture carries more than one target question), so a
segmenter's embedding cache makes the Dice runs cheap: one image encoding per picture.
"""

from __future__ import annotations

import numpy as np

from monailabel_app.data.ground_truth import ground_truth_from_mask
from monailabel_app.data.sample import GroundingSample
from monailabel_app.demo.sample_studies import Lesion

# (height, width, lesion). The format-tuned tiny reasoner always answers the box [30, 40, 90, 100] in its frame: the
# first lesion sits there (a good score), the others partly or not at all, so the metrics vary.
PICTURES = (
    (128, 128, Lesion(cx=55, cy=64, rx=26, ry=26)),
    (112, 168, Lesion(cx=60, cy=60, rx=20, ry=14)),
    (140, 112, Lesion(cx=80, cy=105, rx=14, ry=18)),
    (150, 150, Lesion(cx=118, cy=30, rx=16, ry=12)),
)
SUPERCATEGORIES = ("Thorax", "Abdomen", "Head and neck")
MODALITIES = ("CT", "MRI", "X-ray")


def picture_with_lesion(height: int, width: int, lesion: Lesion, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A grey CT-like RGB picture (noisy body, bright lesion) and the lesion mask."""
    rng = np.random.default_rng(seed)
    mask = lesion.mask(height, width)
    body = Lesion(width / 2, height / 2, width * 0.45, height * 0.45).mask(height, width)
    grey = np.where(mask, 210.0, np.where(body, 90.0, 15.0)) + rng.normal(0, 6, (height, width))
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1), mask


def lesion_samples(count: int = 24, pictures: int = len(PICTURES)) -> list[GroundingSample]:
    """`count` samples over the first `pictures` pictures, consecutive samples sharing a picture."""
    drawn = [picture_with_lesion(h, w, lesion, seed) for seed, (h, w, lesion) in enumerate(PICTURES[:pictures])]
    per_picture = -(-count // pictures)
    samples = []
    for index in range(count):
        picture = index // per_picture
        image, mask = drawn[picture]
        supercategory = SUPERCATEGORIES[picture % len(SUPERCATEGORIES)]
        samples.append(
            GroundingSample(
                sample_id=f"case-{index:03d}",
                image=image,
                question=f"Which finding would explain symptom number {index} in this patient?",
                ground_truth=ground_truth_from_mask(mask),
                mask=mask,
                modality=MODALITIES[(index // 3) % len(MODALITIES)],
                supercategory=supercategory,
                category=f"{supercategory} lesion {index % 2}",
            )
        )
    return samples

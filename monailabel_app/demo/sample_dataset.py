"""A small synthetic U-MRG-format data set, and two simulated models' answers to it, for trying the evaluation and
comparison tools offline (no patient data, nothing downloaded):

    python -m monailabel_app.demo.sample_dataset data/sample

writes
- `synthetic.parquet`: the samples in U-MRG's parquet format (what `--data` takes, as for the published split);
- `folder/`: the same samples as PNG pictures, 0/255 masks and an `index.json` (the layout a site's own data takes);
- `answers-careful.jsonl`, `answers-hasty.jsonl`: answers in the released model's output format (`<think>` reasoning,
  `<answer>` with a box and two points) from two *simulated* models, made from the ground truth with noise: "careful"
  lands near the target and rarely breaks the format, "hasty" strays further and breaks it more often. They are for
  trying `--backend answers` and `compare`; they say nothing about any real model.

Pictures are noisy grey "bodies" with one bright or dark oval lesion, over four modalities and super-categories;
several questions share each picture, as in U-MRG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from monailabel_app.data.folder_samples import write_folder_dataset
from monailabel_app.data.ground_truth import ground_truth_from_mask
from monailabel_app.data.sample import GroundingSample
from monailabel_app.data.umrg_parquet import write_umrg_parquet
from monailabel_app.demo.sample_studies import Lesion

# (modality, super-category, category, questions): implicit questions, the target never named
CASES = (
    (
        "CT",
        "Thorax",
        "Lung nodule",
        (
            "Which finding could explain this patient's persistent cough and weight loss?",
            "What should be biopsied to explain the abnormal screening result?",
            "Which region accounts for the reduced breath sounds on this side?",
        ),
    ),
    (
        "MRI",
        "Head and neck",
        "Brain lesion",
        (
            "What could be causing this patient's new-onset seizures?",
            "Which abnormality best explains the progressive headaches?",
            "Where is the lesion that would account for the visual field defect?",
        ),
    ),
    (
        "Ultrasound",
        "Abdomen",
        "Liver lesion",
        (
            "Which finding might explain the right upper quadrant pain?",
            "What could account for the raised liver enzymes in this patient?",
            "Which structure should be followed up after this scan?",
        ),
    ),
    (
        "X-ray",
        "Musculoskeletal",
        "Bone lesion",
        (
            "What explains the patient's localised bone pain at night?",
            "Which area could be the source of the pathological fracture risk?",
            "Where is the abnormality behind the swelling the patient reports?",
        ),
    ),
)
SIMULATED_MODELS = {
    # name: (box/point noise as a share of the lesion size, share of answers that break the format)
    "careful": (0.08, 0.05),
    "hasty": (0.35, 0.25),
}
BROKEN_ANSWERS = (
    "<think>The image is hard to read.</think>I cannot determine the location.",
    '<think>A focal lesion is visible.</think><answer>{"bbox": [10, 10, 40, 40]}</answer>',
    '<think>Likely the oval region.</think><answer>```json\n{"bbox": [1, 2, 3, 4]}\n```</answer>',
)


def picture(height: int, width: int, lesion: Lesion, bright: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey RGB "body" with one lesion, and the lesion's mask."""
    rng = np.random.default_rng(seed)
    mask = lesion.mask(height, width)
    body = Lesion(width / 2, height / 2, width * 0.46, height * 0.44).mask(height, width)
    lesion_value = 215.0 if bright else 35.0
    grey = np.where(mask, lesion_value, np.where(body, 110.0, 12.0)) + rng.normal(0, 7, (height, width))
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1), mask


def synthetic_samples(pictures: int = 12, questions_per_picture: int = 3, seed: int = 0) -> list[GroundingSample]:
    """`pictures` pictures, cycling over CASES, each asked `questions_per_picture` questions (ids "synthetic-NNN")."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(pictures):
        modality, supercategory, category, questions = CASES[index % len(CASES)]
        height, width = (int(v) for v in rng.integers(128, 193, size=2))
        rx, ry = (float(v) for v in rng.uniform(0.08, 0.18, size=2) * (width, height))
        cx = float(rng.uniform(0.25, 0.75) * width)
        cy = float(rng.uniform(0.25, 0.75) * height)
        image, mask = picture(height, width, Lesion(cx, cy, rx, ry), bright=modality != "Ultrasound", seed=seed + index)
        for question in questions[:questions_per_picture]:
            samples.append(
                GroundingSample(
                    sample_id=f"synthetic-{len(samples):03d}",
                    image=image,
                    question=question,
                    ground_truth=ground_truth_from_mask(mask),
                    mask=mask,
                    modality=modality,
                    supercategory=supercategory,
                    category=category,
                )
            )
    return samples


def simulated_answer(sample: GroundingSample, noise: float, broken_share: float, rng: np.random.Generator) -> str:
    """One answer in the released model's format, the ground truth moved by noise (or a broken answer)."""
    if rng.random() < broken_share:
        return BROKEN_ANSWERS[int(rng.integers(len(BROKEN_ANSWERS)))]
    height, width = sample.image.shape[:2]
    x1, y1, x2, y2 = sample.ground_truth["bbox_2d"]
    scale = noise * max(x2 - x1, y2 - y1)
    box = np.asarray([x1, y1, x2, y2], dtype=float) + rng.normal(0, scale, 4)
    box = np.clip(
        [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])],
        0,
        [width - 1, height - 1, width - 1, height - 1],
    )
    points = np.asarray(sample.ground_truth["point_2d"], dtype=float) + rng.normal(0, scale, (2, 2))
    points = np.clip(points, 0, [width - 1, height - 1])
    side = "left" if (box[0] + box[2]) / 2 < width / 2 else "right"
    level = "upper" if (box[1] + box[3]) / 2 < height / 2 else "lower"
    reasoning = (
        f"The question points to a cause in the {sample.supercategory.lower()}. On this {sample.modality} image "
        f"the most conspicuous focal abnormality is an oval region in the {level} {side} part, which fits a "
        f"{sample.category.lower()}; it is the most likely target."
    )
    answer = {
        "bbox": [int(round(v)) for v in box],
        "points_1": [int(round(v)) for v in points[0]],
        "points_2": [int(round(v)) for v in points[1]],
    }
    return f"<think>{reasoning}</think><answer>{json.dumps(answer)}</answer>"


def write_simulated_answers(samples: Sequence[GroundingSample], path: Path, model: str, seed: int = 0) -> Path:
    noise, broken_share = SIMULATED_MODELS[model]
    rng = np.random.default_rng([seed, list(SIMULATED_MODELS).index(model)])
    with open(path, "w", encoding="utf-8") as out:
        for sample in samples:
            text = simulated_answer(sample, noise, broken_share, rng)
            out.write(json.dumps({"id": sample.sample_id, "model": f"simulated-{model}", "output": text}) + "\n")
    return path


def write_sample_dataset(folder: Path, pictures: int = 12, questions_per_picture: int = 3, seed: int = 0) -> dict:
    """Writes everything the module docstring lists into `folder`; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    samples = synthetic_samples(pictures, questions_per_picture, seed)
    written = {
        "parquet": write_umrg_parquet(samples, folder / "synthetic.parquet"),
        "folder": write_folder_dataset(samples, folder / "folder"),
    }
    for model in SIMULATED_MODELS:
        written[f"answers-{model}"] = write_simulated_answers(samples, folder / f"answers-{model}.jsonl", model, seed)
    return written


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m monailabel_app.demo.sample_dataset",
        description="Write a small synthetic U-MRG-format data set and two simulated models' answers to it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("folder", help="where to write synthetic.parquet, folder/ and the answers files")
    parser.add_argument("--pictures", type=int, default=12, help="pictures (one lesion each)")
    parser.add_argument("--questions-per-picture", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.pictures < 1:
        parser.error("--pictures must be at least 1")
    written = write_sample_dataset(Path(args.folder), args.pictures, args.questions_per_picture, args.seed)
    count = args.pictures * args.questions_per_picture
    print(f"wrote {count} samples: " + ", ".join(str(path) for path in written.values()))
    return written


if __name__ == "__main__":
    main()

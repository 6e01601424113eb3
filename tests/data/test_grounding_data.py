"""Data loaders: U-MRG parquet round trip and tolerance, the folder layout, datastore labels cut to slices, skips."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from monailabel_app.data.ground_truth import ground_truth_from_mask
from monailabel_app.data.load_report import (
    EMPTY_MASK,
    INVALID_RECORD,
    MISSING_FILE,
    MISSING_QUESTION,
    NO_GROUND_TRUTH,
    SHAPE_MISMATCH,
    UNEXPECTED_ERROR,
    UNREADABLE_IMAGE,
    LoadReport,
    SkippedSample,
    build_or_skip,
)
from monailabel_app.data.loaders import load_samples
from monailabel_app.data.sample import GroundingSample
from monailabel_app.data.umrg_parquet import UMRG_SCHEMA, UmrgParquet, extract_question, write_umrg_parquet
from monailabel_app.demo.sample_studies import CT_LESION, Lesion, endoscopy_picture, write_ct, write_png, xray_picture
from monailabel_app.imaging.medical_image import read_medical_image, write_label
from monailabel_app.imaging.windowing import to_display_rgb
from monailabel_app.reasoning.prompt import build_prompt

CATEGORIES = [("X-ray", "Thorax", "nodule"), ("Endoscopy", "Digestive", "polyp"), ("CT", "Abdomen", "liver lesion")]


def synthetic_samples(count: int) -> list[GroundingSample]:
    """Pictures of varying size and colour with one elliptic target each."""
    samples = []
    for i in range(count):
        height, width = 40 + (i % 5) * 7, 50 + (i % 3) * 11
        rng = np.random.default_rng(i)
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        mask = Lesion(cx=10 + i % 20, cy=12 + i % 15, rx=4 + i % 6, ry=3 + i % 4).mask(height, width)
        modality, supercategory, category = CATEGORIES[i % len(CATEGORIES)]
        samples.append(
            GroundingSample(
                sample_id=f"case-{i:03d}",
                image=image,
                question=f"Where would a clinician look first in case {i}?",
                ground_truth=ground_truth_from_mask(mask),
                mask=mask,
                modality=modality,
                supercategory=supercategory,
                category=category,
            )
        )
    return samples


def png_bytes(pixels: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="PNG")
    return stream.getvalue()


def test_umrg_parquet_round_trip(tmp_path):
    originals = synthetic_samples(36)
    path = write_umrg_parquet(iter(originals), tmp_path / "test.parquet", row_group_rows=8)

    table = pq.read_table(path)
    assert table.schema.names == ["images", "masks", "prompt", "data_source", "reward_model", "extra_info"]
    first = table.slice(0, 1).to_pylist()[0]
    assert first["prompt"] == [{"role": "user", "content": originals[0].question}]
    assert json.loads(first["reward_model"]["ground_truth"]) == originals[0].ground_truth
    assert set(np.unique(np.asarray(Image.open(io.BytesIO(first["masks"][0]["bytes"]))))) == {0, 255}
    assert first["data_source"] == "umrg" and first["extra_info"]["supercategory"] == "Thorax"

    report = LoadReport()
    loaded = list(load_samples(path, report))
    assert report.loaded == 36 and report.total_skipped == 0 and report.summary() == "36 samples loaded, none skipped"
    for original, sample in zip(originals, loaded, strict=True):
        assert sample.sample_id == original.sample_id and sample.question == original.question
        assert sample.ground_truth == original.ground_truth
        assert (sample.image == original.image).all() and sample.image.dtype == np.uint8
        assert sample.mask.dtype == bool and (sample.mask == original.mask).all()
        assert (sample.modality, sample.supercategory, sample.category) == (
            original.modality,
            original.supercategory,
            original.category,
        )
        assert sample.extra["data_source"] == "umrg"

    dataset = UmrgParquet(path)
    assert len(dataset) == 36
    for index in (35, 3, 17, 0):  # across row groups, out of order
        assert dataset.sample(index).sample_id == originals[index].sample_id
        assert dataset.sample(index).ground_truth == originals[index].ground_truth


REFERENCE_STYLE_PROMPT = (
    "<image>\nThis is a medical image localization task.\nThe question only hints at the target.\n\n"
    "Think step by step.\nQuestion: Which area suggests the cause of the cough?\n\n"
    "Step-by-step guidelines:\n1. Interpret the question.\n\n"
    "Example Output:\n<think> ... </think><answer>{...}</answer>"
)


@pytest.mark.parametrize(
    "prompt",
    [
        [{"role": "user", "content": "Which area suggests the cause of the cough?"}],
        [{"role": "user", "content": "<image>\n  Which area suggests\nthe cause of the cough?  "}],
        [{"role": "user", "content": REFERENCE_STYLE_PROMPT}],
        [{"role": "user", "content": build_prompt("Which area suggests the cause of the cough?", think=True)}],
        [{"role": "user", "content": build_prompt("Which area suggests the cause of the cough?", think=False)}],
        [
            {
                "role": "user",
                "content": "<image>\nPlease answer Which area suggests the cause of the cough? with bbox "
                "and points.\n\nOutput Formats:\n...",
            }
        ],
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "Which area suggests the cause of the cough?"}],
            },
        ],
        "Which area suggests the cause of the cough?",
    ],
)
def test_extract_question_finds_the_bare_question(prompt):
    assert extract_question(prompt) == "Which area suggests the cause of the cough?"


def test_extract_question_of_nothing_is_empty():
    assert extract_question(None) == "" and extract_question([]) == "" and extract_question("<image>\n ") == ""


def test_umrg_reader_tolerates_other_encodings(tmp_path):
    """Plain bytes instead of {bytes, path}, other extra_info spellings, the template in the prompt, a 16-bit
    picture, no ground truth (computed from the mask), and an image given by a path beside the parquet."""
    mask = Lesion(30, 20, 8, 6).mask(48, 64)
    mask_png = png_bytes(mask.astype(np.uint8) * 255)
    deep_grey = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20
    plain = {
        "images": [png_bytes(deep_grey)],
        "masks": [mask_png],
        "prompt": [{"role": "user", "content": build_prompt("Is something wrong here?")}],
        "data_source": "umrg",
        "reward_model": {"style": "rule"},
        "extra_info": {
            "Sample_ID": "x",
            "Super-Category": "Thorax",
            "CATEGORY": "nodule",
            "image_modality": "X-ray",
            "healthy": False,
        },
    }
    pq.write_table(pa.Table.from_pylist([plain]), tmp_path / "plain.parquet")
    [sample] = load_samples(tmp_path / "plain.parquet")
    assert sample.question == "Is something wrong here?" and sample.sample_id == "x"
    assert (sample.modality, sample.supercategory, sample.category) == ("X-ray", "Thorax", "nodule")
    assert sample.image.shape == (48, 64, 3) and sample.image.dtype == np.uint8 and sample.image.max() == 255
    assert sample.ground_truth == ground_truth_from_mask(mask)
    assert sample.extra["extra_info"]["healthy"] is False

    write_png(xray_picture(height=48, width=64), tmp_path / "beside.png")
    given = {"bbox_2d": [1, 2, 3, 4], "point_2d": [[2, 3], [3, 3]]}
    by_path = {
        "images": [{"bytes": None, "path": "beside.png"}],
        "masks": [{"bytes": mask_png, "path": None}],
        "prompt": [{"role": "user", "content": "What looks abnormal?"}],
        "reward_model": {"ground_truth": json.dumps(given)},
        "extra_info": {"index": 8},
    }
    pq.write_table(pa.Table.from_pylist([by_path]), tmp_path / "by_path.parquet")
    [sample] = load_samples(tmp_path / "by_path.parquet")
    assert (sample.image[..., 0] == xray_picture(height=48, width=64)).all()
    assert sample.ground_truth == given and sample.sample_id == "8"  # the given box wins over the mask's
    assert sample.category == "unknown"


def test_umrg_bad_rows_are_skipped_and_counted(tmp_path):
    good = synthetic_samples(6)
    good[1].mask = np.zeros_like(good[1].mask)
    good[2].question = "   "
    good[3].mask = good[3].mask[:-2]
    path = write_umrg_parquet(good, tmp_path / "train.parquet")
    table = pq.read_table(path).to_pylist()
    table[4]["images"] = [{"bytes": b"\x89PNG\r\n\x1a\n truncated", "path": None}]
    table[5]["images"] = []
    table.append({**table[0], "masks": [], "reward_model": {"ground_truth": "not json", "style": "rule"}})
    pq.write_table(pa.Table.from_pylist(table, schema=UMRG_SCHEMA), path)

    report = LoadReport(max_messages=3)
    loaded = list(load_samples(path, report))
    assert [sample.sample_id for sample in loaded] == ["case-000"]
    assert report.skipped == {
        EMPTY_MASK: 1,
        MISSING_QUESTION: 1,
        SHAPE_MISMATCH: 1,
        UNREADABLE_IMAGE: 1,
        MISSING_FILE: 1,
        NO_GROUND_TRUTH: 1,
    }
    assert len(report.messages) == 3 and report.messages[0].startswith("case-001: empty mask")
    assert report.summary().startswith("1 samples loaded, 6 skipped (")
    with pytest.raises(SkippedSample, match="empty mask"):
        UmrgParquet(path).sample(1)


def test_an_unforeseen_error_in_one_record_is_counted_not_raised():
    report = LoadReport()
    assert build_or_skip(report, "odd", lambda: [1 / 0]) == []
    assert report.skipped == {UNEXPECTED_ERROR: 1} and "ZeroDivisionError" in report.messages[0]


def test_folder_layout(tmp_path):
    (tmp_path / "images").mkdir()
    write_png(xray_picture(), tmp_path / "images" / "xray.png")
    write_png(endoscopy_picture(), tmp_path / "images" / "endo.png")
    xray_mask = (Lesion(150, 90, 22, 18).mask(180, 240) * 255).astype(np.uint8)
    write_png(xray_mask, tmp_path / "xray_mask.png")
    write_png(np.zeros((160, 200), np.uint8), tmp_path / "empty_mask.png")
    (tmp_path / "corrupt.png").write_bytes(b"not a picture at all")
    given = {"bbox_2d": [95, 50, 145, 90], "point_2d": [[120, 70], [110, 72]]}
    records = [
        {
            "id": "a",
            "image": "images/xray.png",
            "mask": "xray_mask.png",
            "question": "Why the fever?",
            "modality": "X-ray",
            "supercategory": "Thorax",
            "category": "opacity",
        },
        {"id": "b", "image": "images/endo.png", "question": "What bleeds?", **given, "window": "minmax"},
        {"id": "c", "image": "images/xray.png", "mask": "xray_mask.png"},
        {"id": "d", "image": "images/missing.png", "mask": "xray_mask.png", "question": "Q?"},
        {"id": "e", "image": "corrupt.png", "question": "Q?", **given},
        {"id": "f", "image": "images/endo.png", "mask": "empty_mask.png", "question": "Q?"},
        {"id": "g", "image": "images/endo.png", "question": "Q?"},
        {"id": "h", "image": "images/xray.png", "mask": "xray_mask.png", "question": "Q?", "window": "wide"},
        "not a record",
        {"id": "ct", "image": "ct.nii.gz", "question": "What enhances?", "slice": 6, "window": "40,400", **given},
        {"id": "ct-all", "image": "ct.nii.gz", "question": "What enhances?", **given},
    ]
    write_ct(tmp_path / "ct.nii.gz")
    (tmp_path / "index.json").write_text(json.dumps(records))

    report = LoadReport()
    loaded = {sample.sample_id: sample for sample in load_samples(tmp_path, report)}
    assert sorted(loaded) == ["a", "b", "ct:z6"]
    assert loaded["ct:z6"].ground_truth == given and loaded["ct:z6"].mask is None  # a slice named: its box is valid
    assert loaded["a"].ground_truth == ground_truth_from_mask(xray_mask) and loaded["a"].mask.sum() > 0
    assert (loaded["a"].image == to_display_rgb(xray_picture())).all()
    assert (loaded["a"].modality, loaded["a"].category) == ("X-ray", "opacity")
    assert loaded["b"].ground_truth == given and loaded["b"].mask is None and loaded["b"].category == "unknown"
    assert report.skipped == {
        MISSING_QUESTION: 1,
        MISSING_FILE: 1,
        UNREADABLE_IMAGE: 1,
        EMPTY_MASK: 1,
        NO_GROUND_TRUTH: 2,
        INVALID_RECORD: 2,
    }


@pytest.fixture
def ct_datastore(tmp_path):
    """A CT volume, a binary label on its lesion slices (same geometry), and a multi-label map."""
    ct_path = write_ct(tmp_path / "ct.nii.gz")
    ct = read_medical_image(str(ct_path))
    label = np.zeros(ct.array.shape, np.uint8)
    for k in range(ct.array.shape[0]):
        if (ct.array[k] > 150).sum() > 100:  # the slices where the synthetic lesion was drawn
            label[k][CT_LESION.mask(*ct.array.shape[1:])] = 1
    multi = label * 2
    multi[:, 70:80, 10:20] = 1
    return (
        ct,
        write_label(label, ct, str(tmp_path / "ct_label.nii.gz")),
        write_label(multi, ct, str(tmp_path / "ct_multi.nrrd")),
        label,
    )


def test_datastore_volume_is_cut_to_labelled_slices(ct_datastore):
    ct, label_path, multi_path, label = ct_datastore
    labelled = [k for k in range(label.shape[0]) if label[k].any()]
    assert 0 < len(labelled) < label.shape[0]
    question = "Where is the enhancing finding?"
    report = LoadReport()
    samples = list(
        load_samples(
            [{"image": ct.path, "label": label_path, "label_info": {"question": question, "window": "soft_tissue"}}],
            report,
        )
    )
    assert [sample.extra["slice"] for sample in samples] == labelled
    assert [sample.sample_id for sample in samples] == [f"ct_label:z{k}" for k in labelled]
    for sample in samples:
        k = sample.extra["slice"]
        assert sample.question == question and sample.image.shape == (*ct.array.shape[1:], 3)
        assert (sample.image == to_display_rgb(ct.array[k], "soft_tissue")).all()
        assert (sample.mask == label[k].astype(bool)).all()
        assert sample.ground_truth == ground_truth_from_mask(label[k])

    one_slice = list(
        load_samples(
            [{"image": ct.path, "label": multi_path}],
            report,
            label_infos={
                multi_path: {"question": question, "slice": labelled[1], "label_value": 2, "category": "lesion"}
            },
        )
    )
    assert len(one_slice) == 1 and one_slice[0].extra["slice"] == labelled[1] and one_slice[0].category == "lesion"
    assert (one_slice[0].mask == label[labelled[1]].astype(bool)).all()  # value 1 elsewhere is left out
    assert report.loaded == len(labelled) + 1 and report.total_skipped == 0


def test_datastore_skips(ct_datastore, tmp_path):
    ct, label_path, _, _ = ct_datastore
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(open(ct.path, "rb").read()[:400])
    flat = str(write_png(np.ones((10, 10), np.uint8), tmp_path / "flat.png"))
    entries = [
        {"image": ct.path, "label": label_path, "label_info": {"window": "lung"}},
        {"image": ct.path, "label": label_path, "label_info": {"question": "Q?", "slice": 0}},
        {"image": ct.path, "label": label_path, "label_info": {"question": "Q?", "slice": 99}},
        {"image": ct.path, "label": str(tmp_path / "gone.nii.gz"), "label_info": {"question": "Q?"}},
        {"image": str(truncated), "label": label_path, "label_info": {"question": "Q?"}},
        {"image": ct.path, "label": flat, "label_info": {"question": "Q?"}},
        {"image": ct.path, "label_info": {"question": "Q?"}},
    ]
    report = LoadReport()
    assert list(load_samples(entries, report)) == []
    assert report.skipped == {
        MISSING_QUESTION: 1,
        EMPTY_MASK: 1,
        INVALID_RECORD: 2,
        MISSING_FILE: 1,
        UNREADABLE_IMAGE: 1,
        SHAPE_MISMATCH: 1,
    }


def test_unusable_sources_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_samples(tmp_path / "nowhere")
    write_umrg_parquet(synthetic_samples(1), tmp_path / "train.parquet")
    with pytest.raises(ValueError, match="train.parquet"):
        load_samples(tmp_path)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 nothing else")
    with pytest.raises(ValueError, match="not a readable parquet"):
        load_samples(tmp_path / "broken.parquet")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "index.json").write_text("{}")
    with pytest.raises(ValueError, match="JSON list"):
        load_samples(tmp_path / "sub")

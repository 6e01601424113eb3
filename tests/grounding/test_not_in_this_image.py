""" "Not in this image": the answer contract's absent form, the opt-in template that offers it, the `not_found` result,
negatives from a clinician's saved labels, the abstention reward (off in the paper preset: the released reward stays
exact), and the evaluation's false-positive and abstention rates."""

from __future__ import annotations

import itk
import numpy as np
import pytest

from monailabel_app.core.frames import ImageFrame
from monailabel_app.data.datastore_samples import datastore_samples
from monailabel_app.data.folder_samples import folder_samples, write_folder_dataset
from monailabel_app.data.load_report import LoadReport
from monailabel_app.data.sample import NEGATIVE_TRUTH, GroundingSample
from monailabel_app.demo.sample_studies import CT_LESION, ct_slice, write_png, xray_picture
from monailabel_app.demo.tiny_models import DEFAULT_ANSWER_TEXT
from monailabel_app.evaluation.answers import ModelAnswer
from monailabel_app.evaluation.scoring import score_sample
from monailabel_app.evaluation.summary import build_metrics
from monailabel_app.grounding.pipeline import STATUS_NOT_FOUND, GroundingPipeline
from monailabel_app.imaging.windowing import to_display_rgb
from monailabel_app.reasoning.answer_parser import parse_answer, says_absent
from monailabel_app.reasoning.prompt import build_prompt, load_template
from monailabel_app.segmentation.factory import build_segmenter
from monailabel_app.training.abstention import reward_with_abstention, trainable_samples, training_reward
from monailabel_app.training.config import PAPER_PRESET, ConfigError, GRPOConfig
from monailabel_app.training.rewards import compute_reward
from tests.grounding.test_grounding_pipeline import ReplayReasoner

ABSENT = "<think>The lungs are clear; nothing explains the finding.</think><answer>{'found': false}</answer>"
BOX = '<answer>{"bbox": [10, 10, 40, 40], "points_1": [20, 20], "points_2": [30, 30]}</answer>'
TRUTH = {"bbox_2d": [10, 10, 40, 40], "point_2d": [[20, 20], [30, 30]]}
QUESTION = "Which finding explains the reduced breath sounds on the left?"


def test_the_absent_form_is_read_and_the_released_answers_mean_what_they_meant():
    absent = parse_answer(ABSENT, 100, 100)
    assert absent.absent and not absent.ok and absent.think.startswith("The lungs are clear") and absent.reason
    assert says_absent('<answer>{"found": false, "bbox": [1, 2, 3, 4]}</answer>')  # explicit, whatever else is there
    released = parse_answer(DEFAULT_ANSWER_TEXT, 140, 112)
    assert released.ok and not released.absent
    assert parse_answer(
        '<answer>{"found": true, "bbox": [1, 2, 30, 40], "point_2d": [[5, 6], [7, 8]]}</answer>', 99, 99
    ).ok
    for not_the_form in ('{"found": "false"}', '{"found": 0}', '{"found": null}', "not found"):
        assert not says_absent(f"<answer>{not_the_form}</answer>"), not_the_form


def test_the_abstain_template_is_opt_in_and_the_paper_template_is_unchanged():
    for think in (True, False):
        assert "found" not in load_template(think)  # the released checkpoints' prompt
        offered = load_template(think, "abstain")
        assert offered.count("{question}") == 1 and "{'found': false}" in offered
        assert load_template(think).split("Guidelines")[0] == offered.split("Guidelines")[0]
    assert QUESTION in build_prompt(QUESTION, True, "abstain")


def test_a_not_found_answer_is_a_result_with_its_reasoning_and_no_mask():
    picture = to_display_rgb(ct_slice(seed=4), "soft_tissue")
    result = GroundingPipeline(ReplayReasoner(ABSENT), build_segmenter("litemedsam"), think=True).ground(
        picture, QUESTION
    )
    assert result.status == STATUS_NOT_FOUND and result.mask is None and result.box is None
    assert result.reasoning == "The lungs are clear; nothing explains the finding."
    assert result.to_json()["status"] == "not_found" and result.reason


def write_volume_label(path, label: np.ndarray) -> str:
    itk.imwrite(itk.image_from_array(label.astype(np.uint8)), str(path))
    return str(path)


def test_saved_no_finding_labels_and_far_slices_are_negatives(tmp_path):
    xray = write_png(xray_picture(), tmp_path / "xray.png")
    empty = write_png(np.zeros(xray_picture().shape[:2], np.uint8), tmp_path / "xray_label.png")
    volume = np.zeros((16, 32, 32), np.int16)
    itk.imwrite(itk.image_from_array(volume), str(tmp_path / "ct.nii.gz"))
    label = np.zeros((16, 32, 32), np.uint8)
    label[5:7, 10:20, 10:20] = 1  # the target on slices 5 and 6
    entries = [
        {"image": str(xray), "label": str(empty), "label_info": {"question": QUESTION}},
        {
            "image": str(tmp_path / "ct.nii.gz"),
            "label": write_volume_label(tmp_path / "ct_label.nii.gz", label),
            "label_info": {"question": QUESTION},
        },
    ]
    samples = {s.sample_id: s for s in datastore_samples(entries)}
    assert samples["xray_label"].is_negative and samples["xray_label"].ground_truth == NEGATIVE_TRUTH
    assert not samples["ct_label:z5"].is_negative and not samples["ct_label:z6"].is_negative
    negatives = sorted(k for k, s in samples.items() if s.is_negative and k.startswith("ct_label"))
    assert negatives == ["ct_label:z0", "ct_label:z15"]  # as many as the positives, at least 3 slices away
    assert all(samples[k].question == QUESTION and not samples[k].mask.any() for k in negatives)
    # a folder data set's empty mask is still skipped: only a clinician's save says "no finding"
    folder = write_folder_dataset(
        [GroundingSample("empty", xray_picture(), QUESTION, {}, mask=np.zeros(xray_picture().shape[:2], bool))],
        tmp_path / "folder",
    )
    report = LoadReport()
    assert list(folder_samples(folder, report)) == [] and report.skipped


def test_the_abstention_reward_and_the_paper_preset(tmp_path):
    assert PAPER_PRESET.abstain_reward == 0
    assert training_reward(PAPER_PRESET)(BOX, TRUTH) == compute_reward(BOX, TRUTH, "soft")  # the released reward
    negative = dict(NEGATIVE_TRUTH)
    assert reward_with_abstention(ABSENT, negative, "soft", 1.0)["abstain"] == 1.0
    assert reward_with_abstention(BOX, negative, "soft", 1.0)["abstain"] == -1.0  # a box on a healthy picture
    assert reward_with_abstention("babble", negative, "soft", 1.0)["score"] == 0.0
    on_positive = reward_with_abstention(BOX, TRUTH, "soft", 1.0)
    assert on_positive == {**compute_reward(BOX, TRUTH, "soft"), "abstain": 0.0}
    assert reward_with_abstention(ABSENT, TRUTH, "soft", 1.0)["score"] < on_positive["score"]
    with pytest.raises(ConfigError, match="template"):
        GRPOConfig(abstain_reward=1.0)
    config = GRPOConfig(abstain_reward=1.0, template="abstain")
    samples = [
        GroundingSample("p", xray_picture(), QUESTION, TRUTH),
        GroundingSample("n", xray_picture(), QUESTION, negative),
    ]
    assert trainable_samples(samples, PAPER_PRESET) == ([samples[0]], 1)  # off: negatives set aside
    assert trainable_samples(samples, config) == (samples, 0)


def test_the_evaluation_reports_false_positives_and_abstentions():
    frame = ImageFrame(240, 180, 240, 180)
    box = {"bbox_2d": list(CT_LESION.box()), "point_2d": [[CT_LESION.cx, CT_LESION.cy]] * 2}
    picture = xray_picture()
    cases = [
        (GroundingSample("n1", picture, QUESTION, dict(NEGATIVE_TRUTH)), ABSENT),
        (GroundingSample("n2", picture, QUESTION, dict(NEGATIVE_TRUTH)), BOX),  # a false positive
        (GroundingSample("n3", picture, QUESTION, dict(NEGATIVE_TRUTH)), ABSENT),
        (GroundingSample("n4", picture, QUESTION, dict(NEGATIVE_TRUTH)), ABSENT),
        (GroundingSample("p1", picture, QUESTION, box), BOX),
        (GroundingSample("p2", picture, QUESTION, box), ABSENT),  # abstained where there is something
    ]
    lines = [score_sample(sample, ModelAnswer(text, frame), None, "app").line for sample, text in cases]
    assert lines[0]["status"] == "not_found" and lines[0]["negative"] and lines[0]["metrics"] == {}
    metrics = build_metrics(lines, {"model": "test"}, "6 samples", {})
    assert metrics["abstention"] == {
        "negatives": 4,
        "false_positive_rate": 25.0,
        "abstained_on_negatives": 75.0,
        "positives": 2,
        "abstention_rate_on_positives": 50.0,
    }
    assert metrics["samples"] == 2 and metrics["overall"]["count"] == 2  # the paper's means: positives only

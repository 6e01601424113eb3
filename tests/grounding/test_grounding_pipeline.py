"""The grounding pipeline on real LiteMedSAM weights, fed answers in the reasoner's resized frame.

The reasoner here replays a given answer text (it stands in for the model; what is under test is everything after it:
parsing, frame mapping, the segmenter, and the label placement), so each kind of bad model output can be named.
"""

from __future__ import annotations

import numpy as np
import pytest

from monailabel_app.core.frames import ImageFrame
from monailabel_app.demo.sample_studies import CT_LESION, CT_SHAPE, ct_slice, write_ct
from monailabel_app.grounding.image_grounding import InvalidSliceError, ground_image
from monailabel_app.grounding.pipeline import GroundingPipeline
from monailabel_app.imaging.medical_image import read_medical_image
from monailabel_app.imaging.windowing import InvalidWindowError, to_display_rgb
from monailabel_app.reasoning.prompt import InvalidQuestionError
from monailabel_app.reasoning.reasoner import ReasonerOutput
from monailabel_app.segmentation.factory import build_segmenter

QUESTION = "What explains the patient's right upper quadrant pain?"


class ReplayReasoner:
    """Answers with `text` in a frame `shrink` times smaller than the picture, as Qwen2.5-VL's resizing would."""

    def __init__(self, text: str, shrink: float = 2.0):
        self.text, self.shrink, self.prompts = text, shrink, []

    def generate(self, image: np.ndarray, prompt: str) -> ReasonerOutput:
        self.prompts.append(prompt)
        height, width = image.shape[:2]
        frame = ImageFrame(width, height, round(width / self.shrink), round(height / self.shrink))
        return ReasonerOutput(text=self.text, frame=frame, prefill_s=0.01, decode_s=0.02, new_tokens=5)


def answer(box, p1, p2) -> str:
    return f"<think>bright focal lesion</think><answer>{{'bbox': {list(box)}, 'points_1': {list(p1)}, 'points_2': {list(p2)}}}</answer>"


@pytest.fixture(scope="module")
def segmenter():
    return build_segmenter("litemedsam")


@pytest.fixture(scope="module")
def picture():
    return to_display_rgb(ct_slice(seed=3), "soft_tissue")


def lesion_answer_in_model_frame(shrink: float = 2.0) -> str:
    x1, y1, x2, y2 = (v / shrink for v in CT_LESION.box())
    cx, cy = CT_LESION.cx / shrink, CT_LESION.cy / shrink
    return answer((x1, y1, x2, y2), (cx - 2, cy), (cx + 2, cy))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_answer_in_the_model_frame_lands_on_the_lesion(segmenter, picture):
    reasoner = ReplayReasoner(lesion_answer_in_model_frame())
    result = GroundingPipeline(reasoner, segmenter).ground(picture, QUESTION)
    assert result.status == "ok" and result.reasoning == "bright focal lesion"
    assert np.allclose(result.box, CT_LESION.box(), atol=1.0)
    truth = CT_LESION.mask(*picture.shape[:2])
    assert result.mask.shape == truth.shape and dice(result.mask, truth) > 0.8
    assert QUESTION in reasoner.prompts[0] and "<think>" in reasoner.prompts[0]
    assert set(result.latencies) >= {"reasoner_prefill", "reasoner_decode", "parse", "segmenter_encode", "total"}


def test_no_think_variant_changes_the_prompt(segmenter, picture):
    reasoner = ReplayReasoner(lesion_answer_in_model_frame())
    GroundingPipeline(reasoner, segmenter, think=False).ground(picture, QUESTION)
    assert "<think>" not in reasoner.prompts[0] and "only the answer" in reasoner.prompts[0]


@pytest.mark.parametrize(
    "text, reason_part",
    [
        ("The lesion is in the liver.", "no <answer> block"),
        ("<think>x</think><answer>liver, segment VI</answer>", "no JSON object"),
        ("<answer>{'bbox': [NaN, 10, 40, 40], 'points_1': [20, 20], 'points_2': [30, 30]}</answer>", "finite"),
        ("<answer>{'bbox': [10, 10, 10, 40], 'points_1': [10, 20], 'points_2': [10, 30]}</answer>", "no area"),
    ],
)
def test_unusable_answers_are_results_with_the_raw_text(segmenter, picture, text, reason_part):
    result = GroundingPipeline(ReplayReasoner(text), segmenter).ground(picture, QUESTION)
    assert result.status == "no_grounding" and reason_part in result.reason
    assert result.raw_text == text and result.mask is None and result.box is None
    assert result.to_json()["status"] == "no_grounding"


def test_negative_and_out_of_image_coordinates_are_clamped_not_trusted(segmenter, picture):
    height, width = picture.shape[:2]
    text = answer((-30, -10, 5000, 30), (-4, 5), (9000, 20))
    result = GroundingPipeline(ReplayReasoner(text), segmenter).ground(picture, QUESTION)
    assert result.status == "ok" and any("clamped" in w for w in result.warnings)
    x1, y1, x2, y2 = result.box
    assert (x1, y1) == (0, 0) and x2 == width - 1 and 0 < y2 <= 60
    assert all(0 <= x <= width - 1 and 0 <= y <= height - 1 for x, y in result.points)


def test_bad_questions_fail_before_the_reasoner_runs(segmenter, picture):
    reasoner = ReplayReasoner(lesion_answer_in_model_frame())
    for question in ("", "   ", "x" * 20000):
        with pytest.raises(InvalidQuestionError):
            GroundingPipeline(reasoner, segmenter).ground(picture, question)
    assert reasoner.prompts == []


def test_volume_label_fills_only_the_grounded_slice(segmenter, tmp_path):
    volume = read_medical_image(str(write_ct(tmp_path / "ct.nii.gz")))
    pipeline = GroundingPipeline(ReplayReasoner(lesion_answer_in_model_frame()), segmenter)
    grounded = ground_image(lambda: pipeline, volume, QUESTION, slice_index=None, window="soft_tissue")
    middle = CT_SHAPE[0] // 2
    assert grounded.slice_index == middle and grounded.label.shape == CT_SHAPE
    assert grounded.label[middle].any() and not np.delete(grounded.label, middle, axis=0).any()
    assert dice(grounded.label[middle] == 1, CT_LESION.mask(*CT_SHAPE[1:])) > 0.8
    data = grounded.to_json()
    assert data["slice"] == middle and data["points_ijk"][0][2] == middle
    assert ground_image(lambda: pipeline, volume, QUESTION, slice_index="3").slice_index == 3
    with pytest.raises(InvalidSliceError, match="out of range"):
        ground_image(lambda: pipeline, volume, QUESTION, slice_index=CT_SHAPE[0])
    with pytest.raises(InvalidSliceError, match="whole number"):
        ground_image(lambda: pipeline, volume, QUESTION, slice_index="middle")


def test_a_bad_request_is_refused_before_the_models_are_asked_for(tmp_path):
    volume = read_medical_image(str(write_ct(tmp_path / "ct.nii.gz")))

    def no_models():
        raise AssertionError("the models were asked for")

    with pytest.raises(InvalidSliceError):
        ground_image(no_models, volume, QUESTION, slice_index=99)
    with pytest.raises(InvalidQuestionError):
        ground_image(no_models, volume, " ")
    with pytest.raises(InvalidWindowError):
        ground_image(no_models, volume, QUESTION, window="sepia")

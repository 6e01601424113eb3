"""Confidence per answer from self-consistency, on tiny Qwen2.5-VL checkpoints built in code and the real LiteMedSAM.

Agreement and scatter are forced through the sampling temperature only: the scorer reads what the model generated.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from lib.options.start_options import parse_start_options
from monailabel_app.demo.sample_studies import xray_picture
from monailabel_app.demo.tiny_models import TINY_MODEL_MARKER
from monailabel_app.grounding.pipeline import GroundingPipeline
from monailabel_app.grounding.settings import GroundingSettings
from monailabel_app.reasoning.answer_parser import parse_answer
from monailabel_app.reasoning.prompt import build_prompt
from monailabel_app.reasoning.reasoner import ReasonerOutput
from monailabel_app.reasoning.self_consistency import score_agreement
from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner
from monailabel_app.segmentation.factory import build_segmenter
from tests.support.generate_spy import GenerateSpy

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

QUESTION = "Which structure would explain the dull percussion note over the right lower chest?"


@pytest.fixture(scope="module")
def format_tuned(format_tuned_reasoner_dir):
    return TransformersReasoner(format_tuned_reasoner_dir, max_new_tokens=96)


@pytest.fixture(scope="module")
def babbling(tiny_reasoner_dir):
    return TransformersReasoner(tiny_reasoner_dir, max_new_tokens=24)


@pytest.fixture(scope="module")
def pipeline(format_tuned):
    return GroundingPipeline(format_tuned, build_segmenter("litemedsam"))


@pytest.fixture(scope="module")
def picture():
    image = xray_picture()
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def test_row_zero_is_the_greedy_answer_and_the_whole_group_is_one_generate_call(babbling, picture):
    prompt = build_prompt(QUESTION, True)
    greedy = babbling.generate(picture, prompt).text
    calls_before = babbling.generate_calls
    with GenerateSpy(babbling.model) as spy:
        outputs = babbling.generate_with_samples(picture, prompt, samples=5, temperature=1.5)
    assert spy.rows == [6] and babbling.generate_calls == calls_before + 1
    assert outputs[0].text == greedy  # a random-weight model: any processor order slip would change the text
    assert len({o.text for o in outputs[1:]}) > 1  # the other rows really sample


def test_samples_forced_to_agree_give_confidence_one(pipeline, format_tuned, format_tuned_reasoner_dir, picture):
    torch.manual_seed(0)
    expected = json.loads((format_tuned_reasoner_dir / TINY_MODEL_MARKER).read_text())["answer_text"]
    with GenerateSpy(format_tuned.model) as spy:
        result = pipeline.ground(picture, QUESTION, confidence_samples=4, confidence_temperature=0.01)
    assert spy.rows == [5]
    assert result.status == "ok" and result.raw_text == expected
    assert result.confidence.value == pytest.approx(1.0, abs=1e-6)
    assert result.confidence.parsed_share == 1.0 and result.confidence.samples == 4
    body = result.to_json()
    assert body["confidence"] == pytest.approx(1.0) and body["confidence_detail"]["temperature"] == 0.01


def test_samples_forced_to_scatter_give_a_low_confidence(pipeline, picture):
    torch.manual_seed(0)
    result = pipeline.ground(picture, QUESTION, confidence_samples=6, confidence_temperature=8.0)
    assert result.status == "ok"  # the greedy row is still the trained answer
    assert result.confidence.value < 0.3
    assert result.confidence.parsed_share < 0.5


def test_off_by_default_and_a_greedy_only_backend_says_why(pipeline, picture):
    assert pipeline.ground(picture, QUESTION).to_json()["confidence"] is None

    class GreedyOnly:
        def __init__(self, inner):
            self.inner = inner

        def generate(self, image, prompt) -> ReasonerOutput:
            return self.inner.generate(image, prompt)

    other = GroundingPipeline(GreedyOnly(pipeline.reasoner), pipeline.segmenter)
    body = other.ground(picture, QUESTION, confidence_samples=3).to_json()
    assert body["confidence"] is None and "transformers backend" in body["confidence_detail"]["note"]


def _parsed(box):
    if box is None:
        return parse_answer("no box here", 100, 100)
    return parse_answer(f"<answer>{{'bbox': {list(box)}, 'points_1': [5, 5], 'points_2': [6, 6]}}</answer>", 100, 100)


def test_agreement_score_by_hand():
    greedy = _parsed((0, 0, 10, 10))
    half_overlap = _parsed((0, 0, 10, 5))  # IoU 0.5
    score = score_agreement(greedy, [greedy, half_overlap, _parsed(None), _parsed((50, 50, 60, 60))], 1.0)
    assert score.value == pytest.approx((1 + 0.5 + 0 + 0) / 4, abs=1e-6)
    assert score.parsed_share == 0.75
    assert score.mean_box_iou_parsed == pytest.approx(1.5 / 3, abs=1e-6)
    assert score_agreement(_parsed(None), [greedy, greedy], 1.0).value == 0.0  # no answer: no confidence in it
    with pytest.raises(ValueError):
        score_agreement(greedy, [], 1.0)


@pytest.mark.parametrize(
    "raw, message",
    [("17", "from 0 to 16"), ("-1", "whole number"), ("four", "whole number"), ("1.5", "whole number")],
)
def test_confidence_samples_option_is_checked(raw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GroundingSettings.from_options(parse_start_options({"confidence_samples": raw}))


def test_confidence_options_parse():
    def from_conf(conf):
        return GroundingSettings.from_options(parse_start_options(conf))

    assert from_conf({"confidence_samples": "auto"}).confidence_samples is None
    assert from_conf({"confidence_samples": "8"}).confidence_samples == 8
    assert from_conf({"confidence_temperature": "0.7"}).confidence_temperature == 0.7
    for bad in ("0", "nan", "-1", "11", "warm"):
        with pytest.raises(ValueError, match="confidence_temperature"):
            from_conf({"confidence_temperature": bad})

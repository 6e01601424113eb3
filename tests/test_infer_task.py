"""The MONAI Label infer task called in-process, as the server calls it, for what needs no running server."""

import pytest
from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.infers.implicit_query import ImplicitQueryInfer
from monailabel_app.core.errors import RequestError, UnavailableError, http_status_of
from monailabel_app.demo.sample_studies import write_png, xray_picture
from monailabel_app.grounding.answer_log import AnswerLog
from monailabel_app.grounding.service import GroundingService
from monailabel_app.grounding.settings import GroundingSettings


def task_for(settings: GroundingSettings, answers_dir) -> ImplicitQueryInfer:
    config = {"question": "", "think": True, "window": ["auto", "lung"]}
    log = AnswerLog(answers_dir)
    return ImplicitQueryInfer(GroundingService(settings), log, InferType.SEGMENTATION, 3, "test", config)


def test_a_reasoner_that_cannot_be_had_is_a_503_that_says_what_to_do(tmp_path):
    task = task_for(GroundingSettings(reasoner=str(tmp_path / "MedReasoner-Soft-7B"), allow_download=False), tmp_path)
    picture = write_png(xray_picture(), tmp_path / "xray.png")
    with pytest.raises(UnavailableError) as raised:
        task({"image": str(picture), "question": "Where is the opacity?"})
    assert http_status_of(raised.value) == 503
    assert "--conf reasoner" in str(raised.value) and "MedReasoner-Soft-7B" in str(raised.value)


def test_bad_options_are_422_before_any_model_loads(tmp_path):
    task = task_for(GroundingSettings(reasoner=str(tmp_path / "never-loaded")), tmp_path / "answers")
    picture = str(write_png(xray_picture(), tmp_path / "xray.png"))
    for request, fragment in (
        ({"think": "maybe"}, "true or false"),
        ({"result_extension": ".docx"}, ".docx"),
        ({"result_compress": "sometimes"}, "result_compress"),
        ({"question": ""}, "question is empty"),
    ):
        with pytest.raises(RequestError) as raised:
            task({"image": picture, "question": "Where?", **request})
        assert http_status_of(raised.value) == 422 and fragment in str(raised.value)
    assert not (tmp_path / "answers").exists()  # a refused request leaves no answer behind

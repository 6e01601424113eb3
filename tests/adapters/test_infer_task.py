"""The answer's path (`AnswerService`) called in-process, as the infer route calls it, for what needs no running
server."""

import threading

import pytest
from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.infers.answer_request import ImageRef
from lib.infers.answering import AnswerService
from lib.infers.implicit_query import ImplicitQueryInfer
from monailabel_app.core.errors import NotFoundError, RequestError, UnavailableError, http_status_of
from monailabel_app.demo.sample_studies import write_png, xray_picture
from monailabel_app.grounding.answer_log import AnswerLog
from monailabel_app.grounding.service import GroundingService
from monailabel_app.grounding.settings import GroundingSettings


def answers_for(settings: GroundingSettings, log: AnswerLog, tmp_path):
    """The path and an `ask(params)` that sends an uploaded picture (no datastore id) down it."""
    config = {"question": "", "think": True, "window": ["auto", "lung"]}
    task = ImplicitQueryInfer(GroundingService(settings), InferType.SEGMENTATION, 3, "test", config)
    answers = AnswerService({"implicit_query": task}, log, lambda: None, threading.RLock())
    picture = str(write_png(xray_picture(), tmp_path / "xray.png"))

    def ask(params: dict):
        return answers.answer(answers.model("implicit_query"), ImageRef(picture), params, None, str(tmp_path))

    return answers, ask


def test_an_unknown_model_is_a_404_that_names_the_models(tmp_path):
    answers, _ = answers_for(GroundingSettings(reasoner=str(tmp_path / "never-loaded")), None, tmp_path)
    with pytest.raises(NotFoundError) as raised:
        answers.model("segmentation_spleen")
    assert http_status_of(raised.value) == 404 and "implicit_query" in str(raised.value)


def test_a_reasoner_that_cannot_be_had_is_a_503_that_says_what_to_do(tmp_path):
    settings = GroundingSettings(reasoner=str(tmp_path / "MedReasoner-Soft-7B"), allow_download=False)
    _, ask = answers_for(settings, AnswerLog(tmp_path / "answers"), tmp_path)
    with pytest.raises(UnavailableError) as raised:
        ask({"question": "Where is the opacity?"})
    assert http_status_of(raised.value) == 503
    assert "--conf reasoner" in str(raised.value) and "MedReasoner-Soft-7B" in str(raised.value)


def test_bad_options_are_422_before_any_model_loads(tmp_path):
    log = AnswerLog(tmp_path / "answers")
    _, ask = answers_for(GroundingSettings(reasoner=str(tmp_path / "never-loaded")), log, tmp_path)
    for request, fragment in (
        ({"think": "maybe"}, "true or false"),
        ({"result_extension": ".docx"}, ".docx"),
        ({"result_extension": ".png", "result_dtype": "float32"}, "uint8 or uint16"),  # was a 500 from the writer
        ({"result_compress": "sometimes"}, "result_compress"),
        ({"question": ""}, "question is empty"),
    ):
        with pytest.raises(RequestError) as raised:
            ask({"question": "Where?", **request})
        assert http_status_of(raised.value) == 422 and fragment in str(raised.value)
    assert not (tmp_path / "answers").exists()  # a refused request leaves no answer behind
    assert "question is empty" in log.refusals.latest()["message"]  # kept in memory: the answer panel says why

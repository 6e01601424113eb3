"""The reasoner backends' one registry (`reasoning/backends.py`): every command offers the same backends, an unknown
or incomplete one is refused with a message, and a backend builds a working reasoner from a spec."""

from __future__ import annotations

import numpy as np
import pytest

from lib.options.start_options import REASONER_BACKENDS
from monailabel_app.core.errors import RequestError
from monailabel_app.evaluation.cli import BACKENDS as EVALUATION_BACKENDS
from monailabel_app.reasoning.backends import BACKEND_NAMES, BACKENDS, ReasonerSpec, backend, build_reasoner
from monailabel_app.reasoning.openai_reasoner import OpenAIReasoner
from monailabel_app.reasoning.sampling import SamplingSettings


def test_every_command_offers_the_registrys_backends():
    assert BACKEND_NAMES == ("transformers", "vllm", "openai")
    assert REASONER_BACKENDS == BACKEND_NAMES  # the server's --conf reasoner_backend
    assert EVALUATION_BACKENDS == (*BACKEND_NAMES, "answers")  # evaluate --backend
    assert [name for name, one in BACKENDS.items() if not one.weights_here] == ["openai"]  # no digest, no publish


def test_an_unknown_or_incomplete_backend_is_refused_with_a_reason():
    with pytest.raises(RequestError, match="unknown reasoner backend 'tgi'.*transformers, vllm, openai"):
        backend("tgi")
    with pytest.raises(RequestError, match="needs the endpoint's base URL"):
        build_reasoner("openai", ReasonerSpec("medreasoner"))


def test_the_openai_backend_gets_the_specs_endpoint_and_bounds():
    spec = ReasonerSpec("medreasoner", url="http://127.0.0.1:9/v1", max_pixels=200_704, concurrency=2, retries=0)
    reasoner = build_reasoner("openai", spec)
    assert isinstance(reasoner, OpenAIReasoner)
    assert reasoner.max_pixels == 200_704 and reasoner.model == "medreasoner"
    reasoner.close()


def test_the_transformers_backend_answers(format_tuned_reasoner_dir, one_torch_thread):
    spec = ReasonerSpec(str(format_tuned_reasoner_dir), SamplingSettings(max_new_tokens=8), device="cpu")
    reasoner = build_reasoner("transformers", spec)
    try:
        answer = reasoner.generate(np.zeros((56, 56, 3), np.uint8), "Where is the lesion?")
        assert isinstance(answer.text, str) and answer.frame.model_width > 0
    finally:
        reasoner.close()

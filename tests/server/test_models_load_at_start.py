"""The models load on a thread of their own from the start, while the server already serves: `/info` answers during
the load (and says `loading`), a question that comes meanwhile waits for that one load and is answered, and a load
that fails is logged, said in `/info` and answered as a 503 with its reason while every other route serves on.

The demo's first start (a fresh model folder) is the slow load here, for real: the load builds the tiny reasoner
first (format tuning, in a process of its own), then loads it and LiteMedSAM. The server process never imports the
training stack: checked on the imports the process itself reports (`python -X importtime`, through
PYTHONPROFILEIMPORTTIME) after the start and the first answer. DeepSpeed came in once through transformers'
`save_pretrained` (accelerate imports it wherever it is installed), which no import contract of this app can see.
"""

from __future__ import annotations

import re

import pytest
import requests

from monailabel_app.demo.sample_studies import write_sample_studies
from tests.support.hostile_requests import IMAGE_ID, good_request
from tests.support.monailabel_server import MonaiLabelServer

pytestmark = pytest.mark.server

TRAINING_PACKAGES = ("deepspeed", "lightning", "lightning_fabric", "pytorch_lightning", "peft")
# the run's records and its owner (the server reads and stops runs through them) and the options' config: no GRPO
LIGHT_TRAINING_MODULES = ("config", "run_records", "run_owner")
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| *(\S+)\s*$", re.MULTILINE)


def training_modules(imported: list[str]) -> list[str]:
    return sorted(
        name
        for name in set(imported)
        if name.split(".")[0] in TRAINING_PACKAGES
        or name.startswith("monailabel_app.training.")
        and name.rsplit(".", 1)[1] not in LIGHT_TRAINING_MODULES
    )


def model_load(server: MonaiLabelServer) -> dict:
    info = requests.get(f"{server.url}/info/", timeout=60)
    assert info.status_code == 200
    return info.json()["model_load"]["implicit_query"]


@pytest.fixture(scope="module")
def demo_first_start(tmp_path_factory):
    """What a newcomer's first demo start sees, in order: `/info` as soon as it answers, the first question, `/info`."""
    studies = tmp_path_factory.mktemp("studies")
    write_sample_studies(studies)
    log = tmp_path_factory.mktemp("logs") / "server.log"
    server = MonaiLabelServer(studies, {"models": "implicit_query", "demo": "true"}, log)
    server.extra_env["PYTHONPROFILEIMPORTTIME"] = "1"  # the process lists every module it imports, as it does
    server.start()
    try:
        seen = {"during_load": model_load(server)}
        seen["first_answer"] = good_request(requests.Session(), server.url)
        seen["after_answer"] = model_load(server)
        seen["log"] = server.log_tail(lines=10**7)
    finally:
        server.stop()
    return seen


def test_info_answers_while_the_models_load_and_the_first_question_waits_for_them(demo_first_start):
    assert demo_first_start["during_load"] == {"state": "loading"}
    answer = demo_first_start["first_answer"]
    assert answer.status_code == 200, answer.text[:2000]
    assert demo_first_start["after_answer"] == {"state": "ready"}
    log = demo_first_start["log"]
    assert log.count("Loading reasoner") == 1 and log.count("Loading segmenter") == 1  # one load, the start's
    assert log.index("Application startup complete") < log.index("Models loaded in")


def test_the_server_process_imports_no_training_stack(demo_first_start):
    imported = IMPORTED.findall(demo_first_start["log"])
    assert "torch" in imported and "monailabel_app.grounding.service" in imported  # the listing is there
    assert training_modules(imported) == []
    assert "Setting accelerator to CPU" not in demo_first_start["log"]  # DeepSpeed's line at import


def test_the_first_answer_reads_and_writes_images_without_itks_python_wrapping(demo_first_start):
    """The image is read and its label written through SimpleITK: ITK's own Python wrapping loads some 550 modules on
    its first read (2.4 to 3.1 s here, on the first answer's path); `itk` itself may be imported (MONAI Label does)."""
    imported = IMPORTED.findall(demo_first_start["log"])
    assert "SimpleITK" in imported
    assert [name for name in imported if name.startswith("itk.") and name.endswith("Python")] == []


@pytest.fixture(scope="module")
def server_with_a_broken_reasoner(tmp_path_factory):
    studies = tmp_path_factory.mktemp("studies")
    write_sample_studies(studies)
    reasoner = tmp_path_factory.mktemp("not_a_checkpoint")  # a folder with no model in it: the load fails
    log = tmp_path_factory.mktemp("logs") / "server.log"
    server = MonaiLabelServer(studies, {"models": "implicit_query", "reasoner": str(reasoner)}, log).start()
    yield server
    server.stop()


def test_a_load_that_fails_is_a_503_with_its_reason_and_the_server_serves_on(server_with_a_broken_reasoner):
    server = server_with_a_broken_reasoner
    refused = good_request(requests.Session(), server.url)
    assert refused.status_code == 503
    reason = refused.json()["detail"]
    assert "not_a_checkpoint" in reason
    state = model_load(server)
    assert state["state"] == "failed" and "not_a_checkpoint" in state["reason"]
    assert "The models could not be loaded at start" in server.log_tail(lines=10**6)
    listed = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=60)
    assert listed.status_code == 200 and IMAGE_ID in listed.json()["objects"]
    assert good_request(requests.Session(), server.url).status_code == 503  # tried again, said again

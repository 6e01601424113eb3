"""The OpenAI-compatible backend against real HTTP servers on 127.0.0.1: our `serve` over the tiny format-tuned
reasoner, and scripted servers that fail, stall or recover. Request counts are bounded in every test.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Callable

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from monailabel_app.data.umrg_parquet import write_umrg_parquet
from monailabel_app.demo.tiny_models import DEFAULT_ANSWER_TEXT
from monailabel_app.evaluation.answers import EndpointUnreachableError, ReasonerAnswers
from monailabel_app.evaluation.cli import main
from monailabel_app.evaluation.run import RunOptions, run_evaluation
from monailabel_app.evaluation.run_folder import RESULTS_FILE
from monailabel_app.reasoning.endpoint_server import create_app
from monailabel_app.reasoning.openai_reasoner import EndpointError, OpenAIReasoner
from monailabel_app.reasoning.qwen_frame import resize_to_model_frame
from monailabel_app.reasoning.sampling import SamplingSettings
from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner
from tests.support.grounding_datasets import lesion_samples
from tests.support.monailabel_server import free_port
from tests.support.threaded_http import ThreadedHttpServer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

SERVED_NAME = "medreasoner"
API_KEY_ENV = "MEDREASONER_TEST_API_KEY"
API_KEY = "test-key-123"
PROMPT = "Where is the lesion?"
STALL_S = 60.0  # far beyond every timeout the tests give a client


@pytest.fixture(scope="module")
def local_reasoner(format_tuned_reasoner_dir):
    return TransformersReasoner(str(format_tuned_reasoner_dir), device="cpu")


@pytest.fixture(scope="module")
def served_url(local_reasoner):
    """`python -m monailabel_app.serve`'s app under uvicorn in a thread, on a free loopback port, with an API key."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(local_reasoner, SERVED_NAME, API_KEY), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)


class ScriptedEndpoint:
    """A real chat-completions server on a free loopback port whose reply to the n-th request (1-based) is scripted:
    `script(body, n)` returns "ok", "error" (500), "refuse" (400) or "stall" (no reply until the endpoint stops, or
    `STALL_S` has passed: a client that never gives up gets a late reply and fails the test, rather than hanging it)."""

    def __init__(self, script: Callable[[dict, int], str]):
        self.script, self.requests, self.stopping = script, [], threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({"headers": dict(self.headers), "body": body})
                action = endpoint.script(body, len(endpoint.requests))
                if action == "stall":
                    endpoint.stopping.wait(STALL_S)
                status = {"error": 500, "refuse": 400}.get(action, 200)
                reply = {"choices": [{"message": {"role": "assistant", "content": DEFAULT_ANSWER_TEXT}}]}
                payload = json.dumps(reply if status == 200 else {"error": {"message": action}}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up on a stalled request
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadedHttpServer(Handler).start()
        self.url = f"{self.server.url}/v1"

    def __enter__(self) -> "ScriptedEndpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.server.stop()


def picture(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(height * width).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [(200, 300), (400, 600)], ids=["inside-both-bounds", "server-shrinks-further"])
def test_the_served_reasoner_answers_in_the_frame_the_local_one_would(served_url, local_reasoner, api_key, size):
    client = OpenAIReasoner(served_url, SERVED_NAME, api_key_env=API_KEY_ENV)
    image = picture(*size)
    answer = client.generate(image, PROMPT)
    local_frame = local_reasoner.prepare_inputs(image, PROMPT)[1]
    assert answer.text == DEFAULT_ANSWER_TEXT and answer.new_tokens > 10
    assert answer.frame == local_frame and (answer.frame.orig_height, answer.frame.orig_width) == size


def test_the_server_lists_its_model_and_refuses_what_it_cannot_serve(served_url, api_key):
    assert OpenAIReasoner(served_url, SERVED_NAME, api_key_env=API_KEY_ENV).list_models() == [SERVED_NAME]
    with pytest.raises(EndpointError, match="401"):
        OpenAIReasoner(served_url, SERVED_NAME, api_key_env="NO_SUCH_VARIABLE").generate(picture(64, 64), PROMPT)
    with pytest.raises(EndpointError, match="404.*not served here"):
        OpenAIReasoner(served_url, "gpt-4o", api_key_env=API_KEY_ENV).generate(picture(64, 64), PROMPT)
    content = [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}, {"type": "text", "text": PROMPT}]
    remote_image = {"model": SERVED_NAME, "messages": [{"role": "user", "content": content}]}
    reply = httpx.post(
        f"{served_url}/chat/completions", json=remote_image, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert reply.status_code == 400 and "data URL" in reply.json()["error"]["message"]


def test_a_request_states_its_sampling_and_sends_the_frame_sized_image(api_key):
    with ScriptedEndpoint(lambda body, n: "ok") as endpoint:
        sampling = SamplingSettings(max_new_tokens=64, seed=3)
        answer = OpenAIReasoner(endpoint.url, "m", api_key_env=API_KEY_ENV, sampling=sampling).generate(
            picture(130, 250), PROMPT
        )
    request = endpoint.requests[0]
    body = request["body"]
    assert {k: body[k] for k in ("model", "temperature", "top_p", "max_tokens", "seed")} == {
        "model": "m",
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 64,
        "seed": 3,
    }
    assert "repetition_penalty" not in body and request["headers"]["Authorization"] == f"Bearer {API_KEY}"
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You are a helpful assistant."}
    image_part, text_part = user["content"]
    assert text_part == {"type": "text", "text": PROMPT}
    sent = Image.open(io.BytesIO(base64.b64decode(image_part["image_url"]["url"].split(",", 1)[1])))
    expected_frame = resize_to_model_frame(picture(130, 250))[1]
    assert sent.size == (expected_frame.model_width, expected_frame.model_height) == (252, 140)
    assert answer.frame == expected_frame and answer.text == DEFAULT_ANSWER_TEXT


def test_server_errors_are_retried_with_backoff_then_reported():
    with ScriptedEndpoint(lambda body, n: "error") as endpoint:
        client = OpenAIReasoner(endpoint.url, "m", retries=2, backoff_s=0.05)
        started = time.perf_counter()
        with pytest.raises(EndpointError, match="failed 3 times.*HTTP 500"):
            client.generate(picture(64, 64), PROMPT)
    assert len(endpoint.requests) == 3 and time.perf_counter() - started >= 0.05 + 0.1


def test_a_stalling_server_times_out_after_its_retries():
    """The server never replies: only the 0.4 s timeout, twice, ends the call (no upper bound on the time: a busy
    machine may take longer to get there)."""
    with ScriptedEndpoint(lambda body, n: "stall") as endpoint:
        client = OpenAIReasoner(endpoint.url, "m", retries=1, backoff_s=0.01, timeout_s=0.4)
        started = time.perf_counter()
        with pytest.raises(EndpointError, match="failed 2 times; last: no reply within the 0.4 s timeout"):
            client.generate(picture(64, 64), PROMPT)
        elapsed = time.perf_counter() - started
    assert len(endpoint.requests) == 2 and 0.8 <= elapsed


def test_a_refused_request_is_not_retried_and_a_flaky_server_recovers():
    with ScriptedEndpoint(lambda body, n: "refuse") as endpoint:
        with pytest.raises(EndpointError, match="refused.*400"):
            OpenAIReasoner(endpoint.url, "m", retries=3, backoff_s=0.01).generate(picture(64, 64), PROMPT)
    assert len(endpoint.requests) == 1
    with ScriptedEndpoint(lambda body, n: "error" if n == 1 else "ok") as endpoint:
        answer = OpenAIReasoner(endpoint.url, "m", retries=3, backoff_s=0.01).generate(picture(64, 64), PROMPT)
    assert answer.text == DEFAULT_ANSWER_TEXT and len(endpoint.requests) == 2


def asks_about(body: dict, sample_index: int) -> bool:
    return f"symptom number {sample_index} " in body["messages"][-1]["content"][1]["text"]


def test_the_evaluation_goes_on_when_a_sample_stalls_and_a_resume_redoes_it(tmp_path):
    samples = lesion_samples(4, pictures=1)
    options = RunOptions(overlays=0, progress=False)
    stall_on_second = ScriptedEndpoint(lambda body, n: "stall" if asks_about(body, 1) else "ok")
    with stall_on_second as endpoint:  # a timeout the answered ones meet on a busy machine (CI: 2 cores, 2 workers)
        client = OpenAIReasoner(endpoint.url, "m", retries=1, backoff_s=0.01, timeout_s=3, max_concurrency=2)
        metrics = run_evaluation(samples, ReasonerAnswers(client, workers=2), None, tmp_path, {}, options)
    assert len(endpoint.requests) == 3 + 2  # three answered, the stalled one tried twice
    lines = [json.loads(text) for text in (tmp_path / RESULTS_FILE).read_text().splitlines()]
    stalled = next(line for line in lines if line["id"] == "case-001")
    assert stalled["status"] == "no_grounding" and "timeout" in stalled["answer_error"]
    assert stalled["metrics"] == {"iou": 0.0, "pdice": 0.0}
    assert metrics["samples"] == 4 and metrics["failed"] == 1
    assert metrics["overall"]["iou"] == pytest.approx(100 * sum(line["metrics"]["iou"] for line in lines) / 4)
    with ScriptedEndpoint(lambda body, n: "ok") as healthy:
        client = OpenAIReasoner(healthy.url, "m")
        resumed = run_evaluation(samples, ReasonerAnswers(client), None, tmp_path, {}, options)
    assert len(healthy.requests) == 1 and asks_about(healthy.requests[0]["body"], 1)
    assert resumed["failed"] == 0 and resumed["samples"] == 4


def test_a_dead_endpoint_stops_the_run_instead_of_scoring_zeros(tmp_path):
    client = OpenAIReasoner(f"http://127.0.0.1:{free_port()}/v1", "m", retries=0)
    answers = ReasonerAnswers(client, max_consecutive_errors=2)
    with pytest.raises(EndpointUnreachableError, match="2 requests in a row failed"):
        run_evaluation(lesion_samples(4, pictures=1), answers, None, tmp_path, {}, RunOptions(progress=False))


def test_the_command_line_scores_an_endpoint_like_the_local_reasoner(served_url, local_reasoner, api_key, tmp_path):
    samples = lesion_samples(4, pictures=2)
    parquet = write_umrg_parquet(samples, tmp_path / "test.parquet")
    arguments = ["--data", str(parquet), "--backend", "openai", "--base-url", served_url, "--model", SERVED_NAME]
    arguments += ["--api-key-env", API_KEY_ENV, "--segmenter", "none", "--overlays", "0", "--no-progress"]
    remote = main([*arguments, "--output", str(tmp_path / "remote")])
    options = RunOptions(overlays=0, progress=False)
    local = run_evaluation(samples, ReasonerAnswers(local_reasoner), None, tmp_path / "local", {}, options)
    assert remote["run"]["base_url"] == served_url and remote["samples"] == 4
    for key in ("overall", "supercategory", "failed"):
        assert remote[key] == local[key]

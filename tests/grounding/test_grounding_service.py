"""The server-side service with each local setting, and with the reasoner behind a shared OpenAI-compatible endpoint
(our `serve` command on loopback, standing where `vllm serve` stands on a GPU host)."""

import threading
import time

import pytest
import uvicorn

from lib.options.start_options import parse_start_options
from monailabel_app.demo.sample_studies import write_ct, write_png, xray_picture
from monailabel_app.grounding.service import GroundingService
from monailabel_app.grounding.settings import GroundingSettings
from monailabel_app.reasoning.endpoint_server import create_app
from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner
from tests.support.monailabel_server import free_port


@pytest.fixture(scope="module")
def endpoint(format_tuned_reasoner_dir):
    port = free_port()
    reasoner = TransformersReasoner(str(format_tuned_reasoner_dir), device="cpu")
    config = uvicorn.Config(create_app(reasoner, "medreasoner", None), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


def test_a_shared_endpoint_grounds_like_the_local_reasoner(endpoint, format_tuned_reasoner_dir, tmp_path):
    picture = write_png(xray_picture(), tmp_path / "xray.png")
    remote = GroundingService(
        GroundingSettings.from_options(
            parse_start_options(
                {
                    "reasoner_backend": "openai",
                    "reasoner_url": endpoint,
                    "reasoner": "medreasoner",
                    "max_new_tokens": "120",
                }
            )
        )
    )
    local = GroundingService(GroundingSettings(reasoner=str(format_tuned_reasoner_dir), max_new_tokens=120))
    remote_result = remote.ground_file(str(picture), "Where is the opacity?").result
    local_result = local.ground_file(str(picture), "Where is the opacity?").result
    assert remote_result.status == local_result.status == "ok"
    assert remote_result.raw_text == local_result.raw_text
    assert remote_result.box == pytest.approx(local_result.box, abs=1.0)
    assert remote.reasoner_path() == "medreasoner"


def test_bad_backend_settings_fail_at_start():
    with pytest.raises(ValueError, match="reasoner_url"):
        GroundingService(GroundingSettings(reasoner_backend="openai"))
    with pytest.raises(ValueError, match="reasoner_backend"):
        GroundingService(GroundingSettings(reasoner_backend="tgi"))
    with pytest.raises(ValueError, match="segmenter"):
        GroundingService(GroundingSettings(segmenter="sam3"))
    with pytest.raises(ValueError, match="whole number"):
        parse_start_options({"max_new_tokens": "lots"})


def test_missing_local_reasoner_is_an_actionable_error(tmp_path):
    from monailabel_app.reasoning.transformers_reasoner import ReasonerUnavailableError

    service = GroundingService(GroundingSettings(reasoner=str(tmp_path / "no-model"), allow_download=False))
    with pytest.raises(ReasonerUnavailableError, match="--conf reasoner"):
        service.ground_file(str(write_ct(tmp_path / "ct.nii.gz")), "Where?")

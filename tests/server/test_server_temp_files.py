"""A server started and stopped leaves its temp folder as it found it: MONAI Label wrote its logging configuration to a
new temp file at every start (now `--log_config` from `logs/`, as `scripts/start.sh` passes it), and the server's
request folder `<tmp>/medreasoner-requests/<pid>/` outlived it (now removed at shutdown). The server gets a temp
folder of its own (TMPDIR), so nothing else running on the machine counts."""

import os
import signal

import pytest
import requests
from monailabel.client import MONAILabelClient

from monailabel_app.demo.sample_studies import write_ct
from tests.support.monailabel_server import MonaiLabelServer

pytestmark = pytest.mark.server


def everything_in(folder):
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, dirs, files in os.walk(folder)
        for name in dirs + files
    )


def test_a_start_and_a_stop_leave_the_temp_folder_empty(tiny_reasoner_dir, tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    write_ct(studies / "ct.nii.gz")
    conf = {"models": "implicit_query", "reasoner": str(tiny_reasoner_dir), "max_new_tokens": "16"}
    server = MonaiLabelServer(studies, conf, tmp_path / "server.log", own_temp=True).start()
    try:
        # an answer (its result passes through a request folder) and a refused upload (so does the upload)
        client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
        client.infer("implicit_query", "ct", {"question": "Which organ explains the jaundice?"})
        refused = requests.put(f"{server.url}/datastore/?image=notes", files={"file": ("notes.txt", b"text")})
        assert refused.status_code in (400, 415, 422), refused.text
        assert (server.temp_dir / "medreasoner-requests" / str(server.process.pid)).is_dir()  # the folder to clean
    finally:
        server.stop()
    # uvicorn shuts down cleanly (the clean-up runs), then ends by the signal it was sent
    assert server.process.returncode in (0, -signal.SIGTERM), server.log_path.read_text()[-3000:]
    left = everything_in(server.temp_dir)
    assert left == [], left

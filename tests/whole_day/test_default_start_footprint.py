"""What the README's default start (`bash scripts/start.sh`) opens to the network and leaves behind.

Its local PACS, Orthanc, listens on every interface (it has no bind address setting); it now runs in a network
namespace of its own behind a forwarder on 127.0.0.1 (`monailabel_app/demo/loopback_forwarder.py`), so another host
can't even connect, while MONAI Label and OHIF (through the server) still read it over DICOMweb, transfers of a few MB
included. A stop (SIGTERM, as an admin's Ctrl-C or service manager sends) ends every process the start made, and the
start leaves nothing in its temp folder (TMPDIR of its own here, so nothing else on the machine counts).
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from unittest import mock

import numpy as np
import psutil
import pytest
import requests
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from pydicom import dcmread
from pydicom.uid import generate_uid

from monailabel_app.demo.sample_dicom import ct_series
from tests.support.default_start import DefaultStart
from tests.support.network import machine_addresses
from tests.support.orthanc_server import INSTALL_HINT, orthanc_installed

pytestmark = [pytest.mark.server, pytest.mark.skipif(not orthanc_installed(), reason=INSTALL_HINT)]

BIG_SIDE = 1024  # two instances of 1024 x 1024 x 16 bit: 4 MB one way, 4 MB back


def everything_in(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    temp = tmp_path_factory.mktemp("start_tmp")
    with mock.patch.dict(os.environ, {"TMPDIR": str(temp)}):  # the start's own temp folder
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)  # set by torch in this process when imported: not an admin's
        running = DefaultStart(tmp_path_factory.mktemp("default_start")).start()
    running.temp_dir = temp
    yield running
    running.stop()


def test_the_local_pacs_is_reachable_from_this_machine_only(start):
    assert start.series("CT")  # 127.0.0.1 reaches it (and the start loaded the samples through it)
    addresses = machine_addresses()
    if not addresses:
        pytest.skip("this machine has no IPv4 address besides loopback")
    for address in addresses:
        with socket.socket() as listening:  # the check can fail: a port open on every interface is reachable there
            listening.bind(("0.0.0.0", 0))
            listening.listen()
            socket.create_connection((address, listening.getsockname()[1]), timeout=5).close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, start.orthanc_port), timeout=5).close()


def test_a_few_megabytes_pass_both_ways(start, tmp_path):
    """STOW-RS of 4 MB and WADO-RS of the same back, through the forwarder, byte for byte."""
    series_uid = generate_uid()
    sent = []
    for index, path in enumerate(ct_series(tmp_path).files[:2]):
        instance = dcmread(str(path))
        instance.SeriesInstanceUID, instance.SOPInstanceUID = series_uid, generate_uid()
        instance.file_meta.MediaStorageSOPInstanceUID = instance.SOPInstanceUID
        instance.Rows = instance.Columns = BIG_SIDE
        pixels = np.random.default_rng(index).integers(-1000, 2000, (BIG_SIDE, BIG_SIDE), dtype=np.int16)
        instance.PixelData = pixels.tobytes()
        sent.append(instance)
    client = DICOMwebClient(start.dicomweb_url, session=create_session_from_user_pass(*start.pacs_auth()))
    client.store_instances(sent)
    study_uid = sent[0].StudyInstanceUID
    received = {one.SOPInstanceUID: one for one in client.retrieve_series(study_uid, series_uid)}
    assert sorted(received) == sorted(one.SOPInstanceUID for one in sent)
    for one in sent:
        assert received[one.SOPInstanceUID].PixelData == one.PixelData


@pytest.mark.skipif(os.geteuid() != 0 or os.environ.get("ALLOW_ROOT") == "1", reason="started as root only")
def test_a_start_as_root_says_how_to_run_as_its_own_user(start):
    assert "sudo -u medreasoner bash scripts/start.sh" in start.log_path.read_text()


def test_a_stop_ends_every_process_and_leaves_the_temp_folder_empty(start):
    refused = requests.put(f"{start.url}/datastore/?image=notes", files={"file": ("notes.txt", b"text")}, timeout=30)
    assert 400 <= refused.status_code < 500  # and the server made its request folder in the temp folder
    started = psutil.Process(start.process.pid).children(recursive=True)
    assert any(process.name() == "Orthanc" for process in started)
    start.stop()
    assert start.process.returncode in (0, 128 + signal.SIGTERM), start.log_path.read_text()[-3000:]
    _, still_running = psutil.wait_procs(started, timeout=30)
    assert still_running == []
    assert everything_in(start.temp_dir) == []

"""`monailabel_app/demo/loopback_forwarder.py` keeps a server that listens on every interface (as Orthanc does) out of
other hosts' reach: only 127.0.0.1 of this machine gets through, a few MB intact. As the user running the tests and,
when that is root, as an unprivileged user (the user namespace path an admin's own user takes). Where no namespace
can be made it still serves, and says so. Stops and deaths: a stop ends both processes; a killed forwarder takes the
server with it; a server's end ends the forwarder with the server's status. The server here is Python's
`http.server` on 0.0.0.0, serving a folder."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.support.monailabel_server import APP_DIR, free_port
from tests.support.network import machine_addresses

pytestmark = pytest.mark.server

NOBODY = 65534
BIG_FILE_BYTES = 4 * 1024 * 1024
START_TIMEOUT_S = 30
AS_ROOT = os.geteuid() == 0


@pytest.fixture
def python_for_nobody() -> str:
    """A Python that `nobody` can run (a virtual environment may live under root's home); the test is skipped
    without one."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        try:
            subprocess.run([candidate, "-c", "pass"], user=NOBODY, group=NOBODY, extra_groups=[], check=True)
            return candidate
        except (TypeError, OSError, subprocess.CalledProcessError):  # none, or nobody may not run it
            pass
    pytest.skip("no Python that the user nobody can run")


@pytest.fixture
def folder():
    """Served by the server: a 4 MB file; readable (and the log writable) by nobody too."""
    path = Path(tempfile.mkdtemp(prefix="forwarder-"))
    (path / "big.bin").write_bytes(os.urandom(BIG_FILE_BYTES))
    os.chmod(path / "big.bin", 0o644)
    if AS_ROOT:
        os.chown(path, NOBODY, NOBODY)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Forwarded:
    """The forwarder with `http.server` behind it, started as `user` (None: this test's user) through `wrapper`."""

    def __init__(self, folder: Path, python: str = sys.executable, user: int | None = None, wrapper=()):
        self.port, self.folder = free_port(), folder
        command = [python, "-m", "monailabel_app.demo.loopback_forwarder", str(self.port), str(folder / "server.log")]
        command += ["--", python, "-m", "http.server", str(self.port), "--bind", "0.0.0.0", "--directory", str(folder)]
        as_user = {} if user is None else dict(user=user, group=user, extra_groups=[])
        env = {**os.environ, "PYTHONPATH": str(APP_DIR)}
        self.process = subprocess.Popen([*wrapper, *command], env=env, stderr=subprocess.PIPE, text=True, **as_user)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_until_serving(self) -> "Forwarded":
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the forwarder ended with {self.process.returncode}: {self.process.stderr.read()}")
            try:
                if requests.get(f"{self.url}/", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise TimeoutError("nothing served")

    def server(self) -> psutil.Process:
        (server,) = [
            p for p in psutil.Process(self.process.pid).children(recursive=True) if "http.server" in p.cmdline()
        ]
        return server

    def stop(self) -> None:
        if self.process.poll() is None:
            for process in psutil.Process(self.process.pid).children(recursive=True):
                process.kill()
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def started():
    running = []
    yield running.append
    for forwarded in running:
        forwarded.stop()


def assert_loopback_only(forwarded: Forwarded) -> None:
    response = requests.get(f"{forwarded.url}/big.bin", timeout=30)
    assert response.content == (forwarded.folder / "big.bin").read_bytes()
    for address in machine_addresses():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, forwarded.port), timeout=5).close()


def assert_a_stop_ends_both(forwarded: Forwarded) -> None:
    server = forwarded.server()
    forwarded.process.send_signal(signal.SIGTERM)
    assert forwarded.process.wait(30) == 0
    server.wait(10)  # gone (psutil.TimeoutExpired otherwise)


def test_only_this_machine_reaches_the_server(folder, started):
    forwarded = Forwarded(folder)
    started(forwarded)
    assert_loopback_only(forwarded.wait_until_serving())
    assert_a_stop_ends_both(forwarded)


@pytest.mark.skipif(not AS_ROOT, reason="the test's own user is unprivileged: the test above covers it")
def test_an_unprivileged_user_gets_the_same_and_the_server_no_privilege(folder, started, python_for_nobody):
    forwarded = Forwarded(folder, python_for_nobody, user=NOBODY)
    started(forwarded)
    assert_loopback_only(forwarded.wait_until_serving())
    server = forwarded.server()
    assert server.uids().effective == NOBODY
    status = Path(f"/proc/{server.pid}/status").read_text()
    assert "CapEff:\t0000000000000000" in status  # nothing from its user namespace
    assert_a_stop_ends_both(forwarded)


@pytest.mark.skipif(not AS_ROOT, reason="making a machine without user namespaces for one process needs root")
def test_where_no_namespace_can_be_made_it_serves_and_warns(folder, started, python_for_nobody):
    wrapper = [sys.executable, "-m", "tests.support.without_user_namespaces"]
    forwarded = Forwarded(folder, python_for_nobody, wrapper=wrapper)
    started(forwarded)
    forwarded.wait_until_serving()
    (server,) = psutil.Process(forwarded.process.pid).children()  # in the forwarder's place
    assert "http.server" in server.cmdline()
    server.terminate()
    forwarded.process.wait(30)
    warning = forwarded.process.stderr.read()
    assert "WARNING:" in warning and "listens on every network interface of this machine" in warning, warning


def test_a_taken_port_is_refused_at_once(folder):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        command = [sys.executable, "-m", "monailabel_app.demo.loopback_forwarder", port, str(folder / "server.log")]
        command += ["--", sys.executable, "-m", "http.server", port]
        run = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(APP_DIR)}, capture_output=True, text=True)
    assert run.returncode == 1 and "is the port taken?" in run.stderr


def test_a_killed_forwarder_takes_the_server_with_it(folder, started):
    forwarded = Forwarded(folder)
    started(forwarded)
    server = forwarded.wait_until_serving().server()
    forwarded.process.kill()
    server.wait(10)


def test_the_forwarder_ends_with_the_servers_status(folder, started):
    forwarded = Forwarded(folder)
    started(forwarded)
    forwarded.wait_until_serving().server().kill()
    assert forwarded.process.wait(30) == 128 + signal.SIGKILL

"""Test support: one way to run a process a test starts and speaks to (the MONAI Label server, `scripts/start.sh`,
Orthanc): its output in a log file, waited on until it answers, stopped with a signal and then killed if it hangs, and
its scratch folders removed when the test process ends."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import requests

# Ports for the servers the tests start: below the kernel's ephemeral range (32768 and up here), which `bind(0)` and
# outgoing connections draw from, so no other socket of the machine's (a client, a gloo store of a training test) can
# be given one between `free_port()` and the server's bind; a block of its own for each test process (pytest-xdist's
# worker), so the two processes never pick the same one.
PORT_BLOCKS = range(20_000, 32_000, 2_000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same twice in one test process (a server restarted on its port keeps it)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    start = PORT_BLOCKS[int(worker) % len(PORT_BLOCKS) if worker.isdigit() else 0]
    for port in random.Random().sample(range(start, start + PORT_BLOCKS.step), 200):
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # taken, or a connection of it still waits out its close
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:  # 200 of the block tried, all taken (never seen): any port the kernel gives
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scratch_folder(prefix: str) -> Path:
    """A new folder under the temp folder, removed when the test process ends (it may outlive one server object)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, True)
    return Path(folder)


def answers_200(url: str, headers: Mapping[str, str] = (), timeout_s: float = 5) -> Callable[[], bool]:
    """A readiness check: `url` answers GET with 200 (no answer yet counts as not ready)."""

    def check() -> bool:
        try:
            return requests.get(url, headers=dict(headers), timeout=timeout_s).status_code == 200
        except requests.RequestException:
            return False

    return check


class ManagedProcess:
    """A child process with its stdout and stderr in `log_path` (appended to when `append`: a restart's lines follow
    the earlier run's). `name` is what error messages call it. Stopped with SIGTERM, and SIGKILL if it has not ended
    within `grace_s`; with `own_group` it leads a process group of its own (a script and what it starts), and a hung
    stop kills that whole group."""

    def __init__(self, name: str, log_path: Path, append: bool = False, grace_s: float = 30, own_group: bool = False):
        self.name, self.log_path, self.append = name, Path(log_path), append
        self.grace_s, self.own_group = grace_s, own_group
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(
        self,
        command: Sequence[str],
        ready: Callable[[], bool],
        timeout_s: float,
        poll_s: float = 1.0,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        waiting_for: str = "answer",
    ) -> subprocess.Popen:
        """Starts `command` and returns once `ready()` holds (asked every `poll_s`). RuntimeError with the log's
        tail if the process ends first; TimeoutError, after stopping it, if `ready()` does not hold in `timeout_s`."""
        self._log = open(self.log_path, "a" if self.append else "w")
        self.process = subprocess.Popen(
            list(command),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=self.own_group,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if ready():
                return self.process
            time.sleep(poll_s)
        self.stop()
        raise TimeoutError(f"{self.name} did not {waiting_for} within {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the process (only the process, not its group: a script stops what it started), SIGKILL if
        it hangs; the log is closed."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                if self.own_group:
                    os.killpg(self.process.pid, signal.SIGKILL)
                else:
                    self.process.kill()
                self.process.wait(10)
        self.close_log()

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()

    def log_tail(self, lines: int = 60) -> str:
        if self._log is not None and not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

"""Test support: the real `monailabel start_server` with this app, as a subprocess on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

from lib.server.log_config import write_log_config
from tests.support.processes import ManagedProcess, answers_200, free_port, scratch_folder

__all__ = ["APP_DIR", "MONAILABEL", "MonaiLabelServer", "free_port"]

APP_DIR = Path(__file__).resolve().parents[2]
MONAILABEL = Path(sys.executable).with_name("monailabel")


class MonaiLabelServer:
    def __init__(
        self,
        studies: Path | str,
        conf: Mapping[str, str],
        log_path: Path,
        env: Mapping[str, str] = (),
        hardened: bool = True,
        probe_headers: Mapping[str, str] = (),
        own_temp: bool = False,
    ):
        self.studies = studies if str(studies).startswith("http") else Path(studies)  # a folder or a DICOMweb URL
        self.conf = dict(conf)
        # never the app's own model/ folder: a reasoner published there by a developer's run would answer instead
        if "model_dir" not in self.conf:  # kept across this object's restarts, removed when the test process ends
            self.conf["model_dir"] = str(scratch_folder("medreasoner-model-"))
        self.extra_env = dict(env)  # MONAI Label settings (MONAI_LABEL_*) for this server only
        self.hardened = hardened  # False: MONAI Label's own ASGI app, which this app must refuse to serve behind
        self.probe_headers = dict(probe_headers)  # with authentication on, /info/ needs a token
        # own_temp: the server's temp folder (TMPDIR) is one of its own, so a test can tell every temporary file it
        # makes from those of anything else running on the machine
        self.temp_dir = scratch_folder("server-tmp-") if own_temp else None
        if self.temp_dir is not None:
            self.extra_env["TMPDIR"] = str(self.temp_dir)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._managed = ManagedProcess("monailabel", self.log_path)

    @property
    def process(self):
        return self._managed.process

    def command(self) -> list[str]:
        """`monailabel start_server` as scripts/start.sh runs it."""
        command = [str(MONAILABEL), "start_server", "--app", str(APP_DIR), "--studies", str(self.studies)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.hardened:
            command += ["--uvicorn_app", "lib.server.asgi:app"]  # as scripts/start.sh starts it
        command += ["--log_config", str(write_log_config())]  # as scripts/start.sh: not a new file in the temp folder
        for key, value in self.conf.items():
            command += ["--conf", key, value]
        return command

    def start(self, timeout_s: float = 240, poll_s: float = 1.0) -> "MonaiLabelServer":
        """Returns once `/info/` answers 200 (asked every `poll_s`: benchmarks ask more often, to time the start)."""
        env = {**os.environ, "PYTHONPATH": str(APP_DIR), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env["MONAILABEL_PYEXE"] = sys.executable  # the `monailabel` script runs whatever `python` is first on PATH
        env["MONAI_LABEL_RELOAD_APP_LIB"] = "false"  # as scripts/start.sh: one copy of lib/ (routes and app share it)
        env.update(self.extra_env)
        ready = answers_200(f"{self.url}/info/", self.probe_headers)
        self._managed.start(self.command(), ready, timeout_s, poll_s, env=env, cwd=APP_DIR, waiting_for="answer /info/")
        return self

    def stop(self) -> None:
        self._managed.stop()

    def log_tail(self, lines: int = 60) -> str:
        return self._managed.log_tail(lines)

"""Test support: `bash scripts/start.sh` exactly as the README's newcomer runs it (no STUDIES, no arguments: the demo
with the local PACS), on free ports and with the local PACS's storage in a test folder; stopped with SIGTERM, as an
admin's Ctrl-C or service manager would. Optionally with a folder datastore (`studies`, the script's STUDIES) and the
script's arguments (`args`), started again after a stop or a kill on the same port."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Sequence

import requests

from tests.support.monailabel_server import APP_DIR
from tests.support.processes import ManagedProcess, answers_200, free_port


class DefaultStart:
    def __init__(self, work_dir: Path, studies: Path | None = None, args: Sequence[str] = ()):
        self.work_dir = Path(work_dir)
        self.studies, self.args = studies, list(args)
        self.port, self.orthanc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb_url = f"http://127.0.0.1:{self.orthanc_port}/dicom-web"
        self.log_path = self.work_dir / "start.log"
        # a restart's lines follow the earlier run's; the script and what it starts are a process group of their own
        self._managed = ManagedProcess("scripts/start.sh", self.log_path, append=True, grace_s=60, own_group=True)

    @property
    def process(self):
        return self._managed.process

    def start(self, timeout_s: float = 300) -> "DefaultStart":
        env = {k: v for k, v in os.environ.items() if k not in ("STUDIES", "HOST")}
        env.update(PORT=str(self.port), ORTHANC_PORT=str(self.orthanc_port), PACS_DIR=str(self.work_dir / "pacs"))
        if self.studies is not None:
            env["STUDIES"] = str(self.studies)
        self._managed.start(
            ["bash", str(APP_DIR / "scripts" / "start.sh"), *self.args],
            answers_200(f"{self.url}/info/"),
            timeout_s,
            env=env,
            cwd=APP_DIR,
            waiting_for="serve /info/",
        )
        return self

    def pacs_auth(self) -> tuple[str, str]:
        from monailabel_app.demo.local_pacs import credentials

        return credentials(self.work_dir / "pacs")

    def series(self, modality: str) -> list[dict]:
        """QIDO-RS on the local PACS (with the credentials the start made): the series the start loaded."""
        params = {"Modality": modality}
        response = requests.get(f"{self.dicomweb_url}/series", params=params, auth=self.pacs_auth(), timeout=30)
        response.raise_for_status()
        return response.json() if response.content else []

    def stop(self) -> None:
        """SIGTERM to the script only (it stops the server and then Orthanc); the whole group if it hangs."""
        self._managed.stop()

    def kill_server(self) -> int:
        """SIGKILL to the MONAI Label server process itself (`monailabel start_server`, which the script runs, with a
        folder datastore by `exec`), as a crash or the kernel's OOM killer would end it; returns its pid."""
        import psutil

        script = psutil.Process(self.process.pid)
        server = next(p for p in [script, *script.children(recursive=True)] if "start_server" in p.cmdline())
        server.send_signal(signal.SIGKILL)
        server.wait(60)
        self.process.wait(60)
        self._managed.close_log()
        return server.pid

    def log_tail(self, lines: int = 60) -> str:
        return self._managed.log_tail(lines)

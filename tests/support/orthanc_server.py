"""Test support: a throw-away Orthanc PACS with DICOMweb on 127.0.0.1, from Debian's `orthanc` + `orthanc-dicomweb`.

Temporary storage, the DICOM port off, remote access off; stopped (and its storage removed with the tmp folder) after.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Iterable

import requests

from monailabel_app.demo.local_pacs import DICOMWEB_PLUGIN, ORTHANC, orthanc_config
from tests.support.monailabel_server import free_port

INSTALL_HINT = "Orthanc is missing: run `bash scripts/install_system.sh` (Debian packages orthanc, orthanc-dicomweb)"


def orthanc_installed() -> bool:
    return Path(ORTHANC).exists() and Path(DICOMWEB_PLUGIN).exists()


class OrthancServer:
    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self.process: subprocess.Popen | None = None

    def _write_config(self) -> Path:
        config = orthanc_config(self.work_dir / "storage", self.port, name="MedReasonerTestPACS")
        path = self.work_dir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, timeout_s: float = 30) -> "OrthancServer":
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self._log = open(self.work_dir / "orthanc.log", "w")
        self.process = subprocess.Popen([ORTHANC, str(config)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.dicomweb_url}/studies", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"Orthanc did not answer within {timeout_s}s:\n{self.log_tail()}")

    def upload(self, files: Iterable[Path]) -> None:
        """Orthanc's own REST upload (one instance a POST): simpler to read in a test than a STOW-RS multipart."""
        for path in files:
            response = requests.post(f"{self.url}/instances", data=Path(path).read_bytes(), timeout=30)
            response.raise_for_status()

    def series(self, modality: str) -> list[dict]:
        """QIDO-RS series search, as MONAI Label does it."""
        response = requests.get(f"{self.dicomweb_url}/series", params={"Modality": modality}, timeout=30)
        response.raise_for_status()
        return response.json() if response.content else []

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join((self.work_dir / "orthanc.log").read_text(errors="replace").splitlines()[-lines:])

"""Test support: a throw-away Orthanc PACS with DICOMweb on 127.0.0.1, from Debian's `orthanc` + `orthanc-dicomweb`.

Temporary storage, the DICOM port off, remote access off; stopped (and its storage removed with the tmp folder) after.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import requests

from monailabel_app.demo.local_pacs import DICOMWEB_PLUGIN, ORTHANC, orthanc_config
from tests.support.processes import ManagedProcess, answers_200, free_port

INSTALL_HINT = "Orthanc is missing: run `bash scripts/install_system.sh` (Debian packages orthanc, orthanc-dicomweb)"


def orthanc_installed() -> bool:
    return Path(ORTHANC).exists() and Path(DICOMWEB_PLUGIN).exists()


class OrthancServer:
    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self._managed = ManagedProcess("Orthanc", self.work_dir / "orthanc.log", grace_s=20)

    @property
    def process(self):
        return self._managed.process

    def _write_config(self) -> Path:
        config = orthanc_config(self.work_dir / "storage", self.port, name="MedReasonerTestPACS")
        path = self.work_dir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, timeout_s: float = 120) -> "OrthancServer":
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        ready = answers_200(f"{self.dicomweb_url}/studies", timeout_s=2)
        self._managed.start([ORTHANC, str(config)], ready, timeout_s, poll_s=0.3)
        return self

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
        self._managed.stop()

    def log_tail(self, lines: int = 40) -> str:
        return self._managed.log_tail(lines)

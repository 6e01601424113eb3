"""The default start's PACS: a local Orthanc (Debian's `orthanc` + `orthanc-dicomweb`) that `scripts/start.sh` runs
when no `STUDIES` is given, so OHIF (which reads studies over DICOMweb only) and 3D Slicer both work out of the box.

Safe by construction: HTTP on 127.0.0.1 only (remote access off), the DICOM port off, no web explorer or WebDAV,
storage in the app's folder (`pacs/` by default). On first start it is filled with the synthetic sample series (CT, MR,
DX; `sample_dicom.py`) over STOW-RS; a PACS that already holds series is left as it is.

    python -m monailabel_app.demo.local_pacs config FOLDER PORT   # writes FOLDER/orthanc.json, prints its path
    python -m monailabel_app.demo.local_pacs fill URL FOLDER      # waits for the PACS, loads the samples if empty
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import requests

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
READY_TIMEOUT_S = 60


def orthanc_config(storage: Path, port: int, name: str = "MedReasonerLocalPACS") -> dict:
    return {
        "Name": name,
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": int(port),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "SaveJobs": False,
        "HttpCompressionEnabled": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }


def write_config(folder: Path, port: int) -> Path:
    folder = Path(folder).resolve()
    (folder / "storage").mkdir(parents=True, exist_ok=True)
    path = folder / "orthanc.json"
    path.write_text(json.dumps(orthanc_config(folder / "storage", port), indent=2))
    return path


def wait_until_ready(dicomweb_url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{dicomweb_url}/studies", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"The local PACS at {dicomweb_url} did not answer within {timeout_s:.0f} s")


def load_samples(dicomweb_url: str, folder: Path) -> list[str]:
    """Stores the sample CT, MR and DX series (STOW-RS) unless the PACS holds series already; their descriptions."""
    from dicomweb_client import DICOMwebClient
    from pydicom import dcmread

    from monailabel_app.demo.sample_dicom import ct_series, mr_series, xray_series

    client = DICOMwebClient(dicomweb_url)
    if client.search_for_series(limit=1):
        return []
    samples = Path(folder) / "samples"
    loaded = []
    for series in (ct_series(samples / "ct"), mr_series(samples / "mr"), xray_series(samples / "dx")):
        client.store_instances([dcmread(str(path)) for path in series.files])
        loaded.append(f"{series.modality} series {series.series_uid} (study {series.study_uid})")
    shutil.rmtree(samples, ignore_errors=True)  # the PACS holds them now
    return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="write the Orthanc configuration; prints its path")
    config.add_argument("folder", type=Path)
    config.add_argument("port", type=int)
    fill = commands.add_parser("fill", help="wait for the PACS, then load the sample series if it is empty")
    fill.add_argument("url")
    fill.add_argument("folder", type=Path)
    args = parser.parse_args()
    if args.command == "config":
        print(write_config(args.folder, args.port))
        return
    wait_until_ready(args.url)
    for line in load_samples(args.url, args.folder):
        print(f"local PACS: loaded the sample {line}")


if __name__ == "__main__":
    main()

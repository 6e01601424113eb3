"""The default start's PACS: a local Orthanc (Debian's `orthanc` + `orthanc-dicomweb`) that `scripts/start.sh` runs
when no `STUDIES` is given, so OHIF (which reads studies over DICOMweb only) and 3D Slicer both work out of the box.

Safe by construction: HTTP from this machine only (Orthanc listens on every interface, having no bind address
setting, so `scripts/start.sh` runs it in a network namespace of its own, reached through 127.0.0.1 only:
`loopback_forwarder.py`; and remote access off, in case no namespace can be made), the DICOM port off, no web
explorer or WebDAV, HTTP basic authentication with a password made on first start (kept in `FOLDER/orthanc.json`, mode
0600: another local user, or a web page reaching 127.0.0.1 through the browser, gets nothing), storage in the app's
folder (`pacs/` by default). The server gets the credentials through MONAI Label's
`MONAI_LABEL_DATASTORE_USERNAME`/`_PASSWORD`. On first start it is filled with the synthetic sample series (CT, MR,
DX; `sample_dicom.py`) over STOW-RS; a PACS that already holds series is left as it is.

    python -m monailabel_app.demo.local_pacs config FOLDER PORT   # writes FOLDER/orthanc.json, prints its path
    python -m monailabel_app.demo.local_pacs user FOLDER          # prints the user name and password, one a line
    python -m monailabel_app.demo.local_pacs fill URL FOLDER      # waits for the PACS, loads the samples if empty
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Optional

import requests

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
READY_TIMEOUT_S = 60


USER = "medreasoner"


def orthanc_config(
    storage: Path, port: int, name: str = "MedReasonerLocalPACS", password: Optional[str] = None
) -> dict:
    """With a password, HTTP basic authentication for user `medreasoner`; without, none (the tests' throw-away PACS)."""
    return {
        "Name": name,
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": int(port),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": password is not None,
        "RegisteredUsers": {USER: password} if password is not None else {},
        "DicomServerEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "SaveJobs": False,
        "HttpCompressionEnabled": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }


def write_config(folder: Path, port: int) -> Path:
    """The configuration, keeping the password of an earlier start (the storage's data stays reachable)."""
    folder = Path(folder).resolve()
    (folder / "storage").mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "orthanc.json"
    password = credentials(folder)[1] if path.is_file() else secrets.token_urlsafe(24)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        json.dump(orthanc_config(folder / "storage", port, password=password), stream, indent=2)
    os.chmod(path, 0o600)
    return path


def credentials(folder: Path) -> tuple[str, str]:
    config = json.loads((Path(folder) / "orthanc.json").read_text())
    ((user, password),) = config["RegisteredUsers"].items()
    return user, password


def wait_until_ready(dicomweb_url: str, auth: tuple[str, str], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until this PACS answers with these credentials (a PACS already on the port that doesn't know them is not
    this one: the start stops instead of filling someone else's)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = requests.get(f"{dicomweb_url}/studies", auth=auth, timeout=2).status_code
            if status == 200:
                return
            if status in (401, 403):
                raise RuntimeError(f"Another server answers at {dicomweb_url}; choose a free ORTHANC_PORT")
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"The local PACS at {dicomweb_url} did not answer within {timeout_s:.0f} s")


def load_samples(dicomweb_url: str, folder: Path, auth: tuple[str, str]) -> list[str]:
    """Stores the sample CT (12 slices, and 13: `sample_dicom.ODD_CT`), MR and DX series (STOW-RS) unless the PACS
    holds series already; their descriptions."""
    from dicomweb_client import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass
    from pydicom import dcmread

    from monailabel_app.demo.sample_dicom import ct_series, mr_series, odd_ct_series, xray_series

    client = DICOMwebClient(dicomweb_url, session=create_session_from_user_pass(*auth))
    if client.search_for_series(limit=1):
        return []
    samples = Path(folder) / "samples"
    loaded = []
    made = (ct_series(samples / "ct"), odd_ct_series(samples / "ct_odd"), mr_series(samples / "mr"))
    for series in (*made, xray_series(samples / "dx")):
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
    user = commands.add_parser("user", help="print the user name and the password, one a line")
    user.add_argument("folder", type=Path)
    fill = commands.add_parser("fill", help="wait for the PACS, then load the sample series if it is empty")
    fill.add_argument("url")
    fill.add_argument("folder", type=Path)
    args = parser.parse_args()
    if args.command == "config":
        print(write_config(args.folder, args.port))
        return
    if args.command == "user":
        print("\n".join(credentials(args.folder)))
        return
    auth = credentials(args.folder)
    wait_until_ready(args.url, auth)
    for line in load_samples(args.url, args.folder, auth):
        print(f"local PACS: loaded the sample {line}")


if __name__ == "__main__":
    main()

"""Test support: the stock OHIF viewer (npm's @ohif/app, fetched by scripts/install_viewer.sh) served on 127.0.0.1
with nothing of ours in it but an `app-config.js` that points its DICOMweb data source at a path of the same origin,
which this server forwards to the PACS with the PACS's credentials. So the browser needs no password, no CORS, and
sees the PACS as a hospital's OHIF would behind its reverse proxy.

Only GET and HEAD reach the PACS (the viewer reads; uploads are off in the config). OHIF's routes (/viewer?...) get
its index.html, as its own `serve.json` rewrites them. One thread per connection; every PACS call has a timeout.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.monailabel_server import APP_DIR
from tests.support.threaded_http import HOP_BY_HOP, ThreadedHttpServer

# The version is pinned once, in the script that fetches it.
OHIF_VERSION = re.search(r"^OHIF_VERSION=(\S+)$", (APP_DIR / "scripts" / "install_viewer.sh").read_text(), re.M)[1]
DIST_DIR = APP_DIR / ".cache" / f"ohif-{OHIF_VERSION}" / "dist"
INSTALL_HINT = f"the stock OHIF {OHIF_VERSION} is missing: run `bash scripts/install_viewer.sh`"
DICOMWEB_PATH = "/dicom-web"  # where the viewer finds the PACS, on its own origin
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".jsonc": "application/json",
    ".wasm": "application/wasm",  # WebAssembly.instantiateStreaming refuses any other type
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".xml": "application/xml",
    ".map": "application/json",
}


def stock_ohif_installed() -> bool:
    return (DIST_DIR / "index.html").is_file()


def app_config(dicomweb_path: str = DICOMWEB_PATH) -> str:
    """OHIF 3.13's `window.config` with one DICOMweb data source on `dicomweb_path` (fields as in OHIF's own
    platform/app/public/config/local_orthanc.js and default.js); uploads and the other data sources off."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "dicomweb",
        "configuration": {
            "friendlyName": "The PACS, through the test's proxy",
            "name": "orthanc",
            "wadoUriRoot": dicomweb_path,
            "qidoRoot": dicomweb_path,
            "wadoRoot": dicomweb_path,
            "qidoSupportsIncludeField": False,
            "supportsReject": False,
            "dicomUploadEnabled": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True},
        },
    }
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "investigationalUseDialog": {"option": "never"},  # its banner would cover the viewport's lower part
        "strictZSpacingForVolumeViewport": True,
        "defaultDataSourceName": "dicomweb",
        "dataSources": [source],
    }
    return f"/** @type {{AppTypes.Config}} */\nwindow.config = {json.dumps(config, indent=2)};\n"


class StockOhif:
    """The stock OHIF on http://127.0.0.1:<free port>/, its DICOMweb on `/dicom-web` forwarded to `dicomweb_url`."""

    def __init__(self, dicomweb_url: str, auth: tuple[str, str] | None = None, dist_dir: Path = DIST_DIR):
        self.dist_dir = Path(dist_dir).resolve()
        self.upstream = urlsplit(dicomweb_url.rstrip("/"))
        self.authorization = "Basic " + base64.b64encode(":".join(auth).encode()).decode() if auth else None
        self.config = app_config().encode()
        self._server = ThreadedHttpServer(self._handler())
        self.url = self._server.url

    def start(self) -> "StockOhif":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def viewer_url(self, study_uid: str) -> str:
        return f"{self.url}/viewer?StudyInstanceUIDs={study_uid}"

    def _static_file(self, path: str) -> Path:
        """The file of dist/ the path names, never one outside it; index.html for OHIF's own routes."""
        if path == "/" or not path.startswith("/"):
            return self.dist_dir / "index.html"
        candidate = (self.dist_dir / path.lstrip("/")).resolve()
        if candidate.is_relative_to(self.dist_dir) and candidate.is_file():
            return candidate
        return self.dist_dir / "index.html"

    def _handler(self):
        ohif = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = urlsplit(self.path).path
                if path == DICOMWEB_PATH or path.startswith(DICOMWEB_PATH + "/"):
                    self._forward()
                elif path == "/app-config.js":
                    self._send(200, "text/javascript; charset=utf-8", ohif.config)
                else:
                    file = ohif._static_file(path)
                    self._send(200, CONTENT_TYPES.get(file.suffix, "application/octet-stream"), file.read_bytes())

            do_HEAD = do_GET

            def _refuse(self):
                self._send(405, "text/plain; charset=utf-8", b"this viewer only reads from the PACS\n")

            do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

            def _send(self, status: int, content_type: str, body: bytes, headers=()):
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self):
                """The request to the PACS at the same path under its DICOMweb root, with its credentials."""
                path = ohif.upstream.path + self.path[len(DICOMWEB_PATH) :]
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host", "cookie"}}
                headers.pop("Authorization", None)
                if ohif.authorization:
                    headers["Authorization"] = ohif.authorization
                upstream = http.client.HTTPConnection(ohif.upstream.hostname, ohif.upstream.port, timeout=60)
                try:
                    upstream.request(self.command, path, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    kept = [
                        (k, v)
                        for k, v in response.getheaders()
                        if k.lower() not in HOP_BY_HOP | {"content-length", "content-type", "www-authenticate"}
                    ]
                finally:
                    upstream.close()
                content_type = response.getheader("Content-Type", "application/octet-stream")
                self._send(response.status, content_type, payload, kept)

        return Handler

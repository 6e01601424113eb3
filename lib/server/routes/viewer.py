"""What the bundled OHIF viewer loads: its files (`/ohif/...`) and the DICOMweb proxy to the PACS (`/proxy/dicom/...`).

- `/ohif/{path}` serves only files inside MONAI Label's OHIF folder (any other path gets the viewer's index page, as a
  single-page app expects); MONAI Label's route answered `/ohif/..` with a 500.
- `/ohif/app-config.js` (OHIF's configuration, plain JavaScript the viewer loads first) is served with a few lines
  appended that load this app's answer panel (`lib/server/static/ohif-panel.js`, after `answer-text.js`, the wording
  it shares with the answers page): the newest answer about the open
  study, with its reasoning, in a corner of the viewer. No OHIF rebuild; `--conf ohif_answer_panel false` serves the
  file unchanged.
- `/proxy/dicom/{qido|wado|stow}/{path}` forwards to the PACS named by `--studies`, asynchronously, with the PACS
  timeout: only DICOMweb paths (letters, digits, `.`, `-`, `_`, `,`, `/`; no `..`), so a request can't reach the PACS's
  other interfaces; GET for queries and retrieval, POST only for STOW-RS (`studies[/<uid>]`, annotator role); only
  the `Accept` and `Content-Type` headers go through. Without a PACS (a folder datastore) it answers 404.
"""

from __future__ import annotations

import os
import re
from typing import Optional

import httpx
import monailabel
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.utils.others.generic import get_mime_type
from starlette.background import BackgroundTask

from lib.common.identifiers import is_inside
from lib.server.context import ServerContext
from lib.server.errors import Forbidden, MethodNotAllowed
from monailabel_app.core.errors import NotFoundError, RequestError, UpstreamError

OHIF_DIR = os.path.join(os.path.dirname(monailabel.__file__), "endpoints", "static", "ohif")
DICOMWEB_PATH = re.compile(r"^[A-Za-z0-9._,/-]*$")
STOW_PATH = re.compile(r"^studies(/[0-9.]+)?/?$")
FORWARDED_HEADERS = ("accept", "content-type")
RETURNED_HEADERS = ("content-type", "content-length", "content-location", "warning")
PROXY_CONNECT_TIMEOUT_S = 5.0


ANSWER_PANEL_LOADER = """
// MedReasoner for MONAI Label: the answer panel (appended by the server; --conf ohif_answer_panel false turns it off)
(function () { ["answer-text.js", "ohif-panel.js"].forEach(function (name) {
  var s = document.createElement("script"); s.src = "/answers/static/" + name; s.async = false; // run in this order
  (document.head || document.documentElement).appendChild(s); }); })();
"""


def viewer_router(context: ServerContext, pacs_timeout_s: float, answer_panel: bool = True) -> APIRouter:
    router = APIRouter(tags=["Others"])
    USER, ANNOTATOR = settings.MONAI_LABEL_AUTH_ROLE_USER, settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR
    timeout = httpx.Timeout(pacs_timeout_s, connect=PROXY_CONNECT_TIMEOUT_S)

    @router.get("/ohif/{path:path}", include_in_schema=False)
    def ohif(path: str, user: User = Depends(RBAC(USER))):
        if answer_panel and path == "app-config.js":
            return ohif_config_with_panel()
        return ohif_file(path)

    @router.api_route("/proxy/dicom/{op}/{path:path}", methods=["GET", "POST"], include_in_schema=False)
    async def proxy(request: Request, op: str, path: str, user: User = Depends(RBAC(USER))):
        if request.method == "POST" and not (op in ("stow", "wado") and STOW_PATH.match(path)):
            raise MethodNotAllowed("Only STOW-RS (POST .../studies) may be sent through the proxy.")
        if request.method == "POST" and ANNOTATOR not in user.roles and context.auth_enabled:
            raise Forbidden(f'Role "{ANNOTATOR}" is required to store objects in the PACS.')
        return await forward(request, op, path, timeout)

    @router.api_route("/proxy/dicom/{path:path}", methods=["GET", "POST"], include_in_schema=False)
    async def proxy_plain(request: Request, path: str, user: User = Depends(RBAC(USER))):
        op, _, rest = path.partition("/")
        if op not in ("qido", "wado", "stow"):
            raise NotFoundError("Use /proxy/dicom/qido/..., /proxy/dicom/wado/... or /proxy/dicom/stow/....")
        return await proxy(request, op, rest, user)

    return router


def ohif_file(path: str) -> FileResponse:
    index = os.path.join(OHIF_DIR, "index.html")
    target = os.path.normpath(os.path.join(OHIF_DIR, path)) if path else index
    if not (is_inside(OHIF_DIR, target) and os.path.isfile(target)):
        target = index
    if not os.path.isfile(target):
        raise NotFoundError("The OHIF viewer is not installed with this MONAI Label.")
    return FileResponse(target, media_type=get_mime_type(target))


def ohif_config_with_panel() -> Response:
    config = ohif_file("app-config.js")
    with open(config.path, encoding="utf-8") as stream:
        text = stream.read()
    return Response(text + ANSWER_PANEL_LOADER, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


def _pacs_base() -> Optional[str]:
    studies = settings.MONAI_LABEL_STUDIES or ""
    return studies.rstrip("/") if studies.startswith(("http://", "https://")) else None


async def forward(request: Request, op: str, path: str, timeout: httpx.Timeout) -> Response:
    base = _pacs_base()
    if base is None:
        raise NotFoundError("No PACS is configured (--studies is a folder): the DICOMweb proxy serves only a PACS.")
    if op not in ("qido", "wado", "stow") or not DICOMWEB_PATH.match(path) or ".." in path or "//" in path:
        raise RequestError("Not a DICOMweb path.")
    prefix = {
        "qido": settings.MONAI_LABEL_QIDO_PREFIX,
        "wado": settings.MONAI_LABEL_WADO_PREFIX,
        "stow": settings.MONAI_LABEL_STOW_PREFIX,
    }[op]
    if path.endswith("metadata") and op == "qido":  # some OHIF versions ask QIDO for metadata (as MONAI Label does)
        prefix = settings.MONAI_LABEL_WADO_PREFIX
    url = f"{base}/{prefix.strip('/')}/{path}" if prefix else f"{base}/{path}"
    headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS}
    username = settings.MONAI_LABEL_DATASTORE_USERNAME or settings.MONAI_LABEL_DICOMWEB_USERNAME
    password = settings.MONAI_LABEL_DATASTORE_PASSWORD or settings.MONAI_LABEL_DICOMWEB_PASSWORD
    auth = (username, password) if username and password else None
    client = httpx.AsyncClient(timeout=timeout, auth=auth, follow_redirects=False)
    body = await request.body() if request.method == "POST" else None
    try:
        upstream = await client.send(
            client.build_request(request.method, url, params=request.query_params, headers=headers, content=body),
            stream=True,
        )
    except httpx.TimeoutException as error:
        await client.aclose()
        raise UpstreamError(f"The PACS did not answer in time ({type(error).__name__}).", 504) from error
    except httpx.HTTPError as error:
        await client.aclose()
        raise UpstreamError(f"The PACS can't be reached ({type(error).__name__}).", 502) from error

    async def close() -> None:
        await upstream.aclose()
        await client.aclose()

    returned = {k: v for k, v in upstream.headers.items() if k.lower() in RETURNED_HEADERS}
    return StreamingResponse(
        upstream.aiter_raw(), status_code=upstream.status_code, headers=returned, background=BackgroundTask(close)
    )

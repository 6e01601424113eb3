"""The ASGI app the MONAI Label server runs with this app:

    monailabel start_server --app . --studies <folder or DICOMweb URL> --uvicorn_app lib.server.asgi:app ...

(`scripts/start.sh` passes it). MONAI Label 0.8.5 lets a server run its own ASGI app in place of `monailabel.app:app`;
this one serves the same REST API that 3D Slicer's and OHIF's MONAI Label clients speak, built from:
- this app's own routes (`lib/server/routes/`) for everything that takes an id, a file or options, or answers with
  clinical text: inference, datastore, sessions, training, active learning, the OHIF files and the DICOMweb proxy,
  logs and model files;
- MONAI Label's remaining routes (info, scoring and batch status, sign-in checks) unchanged, but run
  in worker threads: MONAI Label declares them `async` while doing blocking work, which stalled every other client;
- the error taxonomy as HTTP answers (`errors.py`), request body limits (FastAPI's `max_body_size`: 1 MiB, uploads
  `--conf max_upload_mb`), CORS only for the origins in `--conf cors_origins` (none by default), and MONAI
  Label's authentication with a working token check (`auth.py`);
- the API's description (`/openapi.json`, ReDoc at `/docs`, Swagger UI at `/`), which with authentication on needs a
  signed-in user like every other route (it lists every route and option).
The app refuses to serve without this module (`main.MedReasonerApp.on_init_complete`), so a start that forgets
`--uvicorn_app` fails loudly instead of serving MONAI Label's unchecked routes. (MONAI Label re-imports every `lib.*`
module when it loads `main.py`, so nothing here keeps state in module globals that the app would read.)
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import os
import sys
from contextlib import asynccontextmanager
from typing import Callable, Iterable

import monailabel
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from monailabel.config import settings
from monailabel.endpoints import batch_infer, info, login, scoring
from monailabel.endpoints import train as monailabel_train
from monailabel.endpoints.user.auth import get_current_user
from monailabel.interfaces.utils.app import app_instance

from lib.common.limits import SMALL_BODY_BYTES, ServerLimits
from lib.common.scratch import remove_dead_servers, remove_process_scratch
from lib.options.start_options import OptionError, StartOptions, read_start_options
from lib.pacs.dicomweb import PacsSettings
from lib.server.admission import Admission
from lib.server.auth import auth_router, verified_user
from lib.server.context import ServerContext
from lib.server.errors import ErrorBoundary, install_error_handlers
from lib.server.request_log import demote_proxy_lines
from lib.server.routes.activelearning import activelearning_router
from lib.server.routes.admin import admin_router
from lib.server.routes.answers import answers_router
from lib.server.routes.datastore import datastore_router
from lib.server.routes.infer import infer_router
from lib.server.routes.sessions import sessions_router
from lib.server.routes.train import train_router
from lib.server.routes.viewer import viewer_router

logger = logging.getLogger(__name__)
STATIC_DIR = os.path.join(os.path.dirname(monailabel.__file__), "endpoints", "static")
OPENAPI_URL = "/openapi.json"


@asynccontextmanager
async def lifespan(app: FastAPI):
    """MONAI Label's start-up (build the app, server mode, its init hook), after our own checks."""
    remove_dead_servers()
    warn_if_exposed(bind_host(sys.argv), bool(settings.MONAI_LABEL_AUTH_ENABLE))
    instance = app_instance()
    instance.server_mode(True)
    instance.hardened_server = True  # MedReasonerApp refuses to serve behind any other ASGI app
    instance.on_init_complete()
    yield
    remove_process_scratch()  # a start and stop leave nothing in the temp folder


def build_app() -> FastAPI:
    demote_proxy_lines()
    options = start_options_or_exit(settings.MONAI_LABEL_APP_CONF)
    limits = ServerLimits.from_options(options)
    context = ServerContext(limits, Admission(limits.max_pending_requests))
    app = FastAPI(
        title="MedReasoner for MONAI Label",
        openapi_url=None,  # served by _add_front_page, behind sign-in when authentication is on
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        max_body_size=SMALL_BODY_BYTES,
    )
    app.state.context = context
    app.dependency_overrides[get_current_user] = verified_user
    ours = [
        infer_router(context),
        datastore_router(context),
        train_router(context),
        sessions_router(context),
        viewer_router(context, PacsSettings.from_options(options).timeout_s, options["ohif_answer_panel"]),
        admin_router(context),
        answers_router(context),
        activelearning_router(context),
    ]
    if settings.MONAI_LABEL_AUTH_ENABLE:
        ours.append(auth_router())
    taken: set[tuple[str, str]] = set()
    for router in ours:
        app.include_router(router)
        taken |= _path_methods(router)
    kept = [info.router, scoring.router, batch_infer.router, monailabel_train.router]
    if settings.MONAI_LABEL_AUTH_ENABLE:
        kept.append(login.router)
    for router in kept:
        _add_in_worker_threads(app, router, taken)
    _add_front_page(app)
    install_error_handlers(app)
    # --conf cors_origins (MONAI Label 0.8.5's own MONAI_LABEL_CORS_ORIGINS stops its start_server with a TypeError
    # when set: it json-dumps the parsed URLs); both are honoured
    origins = list(options["cors_origins"]) + [str(o).rstrip("/") for o in settings.MONAI_LABEL_CORS_ORIGINS]
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_credentials=True, allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(ErrorBoundary)  # added last: the outermost of the app's own middleware
    return app


def start_options_or_exit(conf) -> StartOptions:
    """The start options, or the start stops here with one line (no traceback) and exit status 2."""
    try:
        return read_start_options(conf)
    except OptionError as error:
        print(f"Not started: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _path_methods(router: APIRouter) -> set[tuple[str, str]]:
    return {(route.path, method) for route in router.routes if isinstance(route, APIRoute) for method in route.methods}


def _add_in_worker_threads(app: FastAPI, router: APIRouter, taken: set[tuple[str, str]]) -> None:
    """MONAI Label's routes not replaced here, each run in a worker thread."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        methods = sorted(m for m in route.methods if (route.path, m) not in taken)
        if methods:
            app.add_api_route(
                route.path,
                in_worker_thread(route.endpoint),
                methods=methods,
                summary=route.summary,
                tags=route.tags,
                include_in_schema=route.include_in_schema,
                response_model=route.response_model,
            )


def in_worker_thread(endpoint: Callable) -> Callable:
    """A blocking `async def` endpoint as a plain function with the same signature, which FastAPI runs in its thread
    pool; the coroutine gets an event loop of its own there."""
    if not inspect.iscoroutinefunction(endpoint):
        return endpoint

    def run(*args, **kwargs):
        return asyncio.run(endpoint(*args, **kwargs))

    run.__signature__ = inspect.signature(endpoint)
    run.__name__, run.__doc__ = endpoint.__name__, endpoint.__doc__
    return run


def _add_front_page(app: FastAPI) -> None:
    """The API's description and its two pages, for a signed-in user (any role) when authentication is on; the icon
    and MONAI Label's static files stay open."""
    signed_in = [Depends(verified_user)]

    def root_path(request: Request) -> str:  # `monailabel start_server --root_path`, as FastAPI's own pages use it
        return request.scope.get("root_path", "").rstrip("/")

    @app.get(OPENAPI_URL, include_in_schema=False, dependencies=signed_in)
    def openapi(request: Request):
        schema, prefix = app.openapi(), root_path(request)
        if prefix and prefix not in {server.get("url") for server in schema.get("servers", [])}:
            schema = {**schema, "servers": [{"url": prefix}, *schema.get("servers", [])]}
        return JSONResponse(schema)

    @app.get("/docs", include_in_schema=False, dependencies=signed_in)
    def redoc_page(request: Request):
        return get_redoc_html(openapi_url=root_path(request) + OPENAPI_URL, title=f"{app.title} - ReDoc")

    @app.get("/", include_in_schema=False, dependencies=signed_in)
    def api_page(request: Request):
        return HTMLResponse(
            get_swagger_ui_html(openapi_url=root_path(request) + OPENAPI_URL, title=f"{app.title} - APIs").body
        )

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return FileResponse(os.path.join(STATIC_DIR, "favicon.ico"), media_type="image/x-icon")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def bind_host(argv: Iterable[str]) -> str:
    """The address `monailabel start_server` binds (its `--host`/`-i`; MONAI Label's default is 0.0.0.0)."""
    args = list(argv)
    for flag in ("--host", "-i"):
        if flag in args and args.index(flag) + 1 < len(args):
            return args[args.index(flag) + 1]
    return "0.0.0.0"


def warn_if_exposed(host: str, auth_enabled: bool) -> bool:
    """A warning at start when the server listens beyond this machine without authentication; returns whether."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback or auth_enabled:
        return False
    message = (
        f"SECURITY: this server listens on {host}, beyond this machine, WITHOUT authentication: anyone who can reach "
        "it can read studies, labels and questions and start training. Use it only on a trusted network, or turn "
        "authentication on (MONAI_LABEL_AUTH_ENABLE=true with MONAI_LABEL_AUTH_REALM_URI; docs/security.md)."
    )
    logger.warning(message)
    print(message, file=sys.stderr, flush=True)
    return True


app = build_app()

"""How the server answers when something goes wrong: the app's error taxonomy as HTTP, and no error ever unanswered.

- `RequestError` and its kinds (422, 403, 404, 405, 406, 413, 429) and `UnavailableError` (502/503/504, 503 with
  `Retry-After`) become a JSON `{"detail": message}` with their status.
- MONAI Label's own exceptions: an unknown image or label is 404; its "invalid input" is 422.
- Anything else is 500 with a short message, and the trace goes to the log. `ErrorBoundary` answers it itself and
  does not re-raise: Starlette's last-resort handler re-raises after answering, and uvicorn then closes the
  connection, which a client with keep-alive saw as a dropped connection on its *next* request.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from monailabel.datastore.local import ImageNotFoundException, LabelNotFoundException
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lib.common.limits import RETRY_AFTER_S
from monailabel_app.core.errors import RequestError, UnavailableError

logger = logging.getLogger(__name__)
INTERNAL_ERROR = "Internal server error; the details are in the server's log."


class Forbidden(RequestError):
    http_status = 403


class MethodNotAllowed(RequestError):
    http_status = 405


class NotAcceptable(RequestError):
    http_status = 406


class TooManyRequests(RequestError):
    http_status = 429


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(UnavailableError, _unavailable)
    app.add_exception_handler(ImageNotFoundException, _not_found)
    app.add_exception_handler(LabelNotFoundException, _not_found)
    app.add_exception_handler(MONAILabelException, _monailabel_error)


async def _request_error(request: Request, error: RequestError) -> JSONResponse:
    logger.info(f"{request.method} {request.url.path}: {error.http_status} {str(error)[:300]}")
    return JSONResponse({"detail": str(error)}, status_code=error.http_status)


async def _unavailable(request: Request, error: UnavailableError) -> JSONResponse:
    logger.warning(f"{request.method} {request.url.path}: {error.http_status} {str(error)[:300]}")
    headers = {"Retry-After": str(getattr(error, "retry_after_s", RETRY_AFTER_S))} if error.http_status == 503 else None
    return JSONResponse({"detail": str(error)}, status_code=error.http_status, headers=headers)


async def _not_found(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error) or "Not found"}, status_code=404)


async def _monailabel_error(request: Request, error: MONAILabelException) -> JSONResponse:
    if error.error == MONAILabelError.INVALID_INPUT:
        return JSONResponse({"detail": error.msg}, status_code=422)
    logger.error(f"{request.method} {request.url.path}: MONAI Label error {error.error}: {error.msg}")
    return JSONResponse({"detail": INTERNAL_ERROR}, status_code=500)


class ErrorBoundary:
    """Outermost app middleware: an exception nobody handled becomes a 500 answer (and a logged trace), never a
    re-raise that would cost the client its connection."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception(f"Unhandled error in {scope.get('method')} {scope.get('path')}")
            if started:
                return
            response = JSONResponse({"detail": INTERNAL_ERROR}, status_code=500)
            await response(scope, receive, send)

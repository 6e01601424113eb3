"""One error taxonomy for the whole app, so a server can tell the user's fault from its own.

- `RequestError` (a ValueError): the request is wrong and saying so helps the user: HTTP 422, or the narrower status
  its subclass names (404 not found, 413 too large). Its message is shown to the user as it is.
- `UnavailableError` (a RuntimeError): something the request needs can't be had now (a model that isn't downloaded,
  an endpoint or a PACS that is down): HTTP 503, or 502/504 for a broken or silent upstream. The message says what to
  do.
- Anything else is a bug or an unforeseen failure: HTTP 500, logged with its trace, and the user is told only that.

Code outside the core (the MONAI Label adapter) maps these to HTTP with `http_status`; the core never imports a web
framework.
"""

from __future__ import annotations


class RequestError(ValueError):
    """The request can't be served as it is; the message says why and what to send instead."""

    http_status = 422


class NotFoundError(RequestError):
    """The request names something that isn't there (an image id, a model, a label)."""

    http_status = 404


class TooLargeError(RequestError):
    """An upload or request body over the server's documented limit."""

    http_status = 413


class UnavailableError(RuntimeError):
    """A model, an endpoint or a PACS the request needs can't be had now; trying again later may work."""

    http_status = 503


class UpstreamError(UnavailableError):
    """A service we depend on answered badly or broke off (502), or stopped answering (504: set `http_status`)."""

    http_status = 502

    def __init__(self, message: str, http_status: int = 502):
        super().__init__(message)
        self.http_status = http_status


def http_status_of(error: BaseException) -> int:
    """The HTTP status for an error of this taxonomy; 500 for anything else."""
    if isinstance(error, (RequestError, UnavailableError)):
        return int(getattr(error, "http_status", 500))
    return 500

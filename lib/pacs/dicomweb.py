"""The PACS connection (`--studies http://pacs/dicom-web`): options, a client with timeouts, and clear errors.

Options (`--conf key value`):
- `pacs_modalities` (default `CT,MR,DX,CR`): the series the datastore lists and serves; MONAI Label's own filter is
  CT only.
- `pacs_timeout` (default `60`): seconds to wait for the PACS to connect or to send the next bytes; without a
  timeout a PACS that hangs hangs every request with it.
- `pacs_optional` (default `false`): when the PACS can't be reached at start, `false` refuses to start (a wrong URL
  shows at once); `true` starts anyway, serves images uploaded with the request, and answers requests for PACS series
  with 503 until the PACS is back.

Any failure talking to the PACS becomes a `PacsError`, an HTTP 502/503/504 whose message names the PACS, what was
being done and that nothing was saved.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Tuple

import requests
from dicomweb_client.session_utils import create_session_from_user_pass
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX
from requests.adapters import HTTPAdapter

from monailabel_app.core.errors import UpstreamError

logger = logging.getLogger(__name__)

DEFAULT_MODALITIES = ("CT", "MR", "DX", "CR")
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_REFRESH_S = 30.0
CONNECT_TIMEOUT_S = 5.0
RETRY_ATTEMPTS, RETRY_WAIT_MS = 3, 250  # waits 0.5 s, then 1 s
NOTHING_SAVED = "Nothing was saved; try again when the PACS is back."


@dataclass(frozen=True)
class PacsSettings:
    modalities: Tuple[str, ...] = DEFAULT_MODALITIES
    timeout_s: float = DEFAULT_TIMEOUT_S
    optional: bool = False
    refresh_s: float = DEFAULT_REFRESH_S  # how old the listing of series and labels may be (the app's saves: at once)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "PacsSettings":
        """From the parsed start options (`lib/options`)."""
        return cls(
            tuple(options["pacs_modalities"]),
            float(options["pacs_timeout"]),
            bool(options["pacs_optional"]),
            float(options["pacs_refresh_s"]),
        )


class PacsError(UpstreamError):
    """A PACS failure, in the core's taxonomy (the server's one boundary makes it the HTTP answer a viewer shows):
    502 (bad answer or broken transfer), 503 (can't connect), 504 (no answer in time)."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail, http_status=status_code)
        self.status_code, self.detail = status_code, detail


class _TimeoutAdapter(HTTPAdapter):
    """requests has no session-wide timeout; this adapter gives every request one."""

    def __init__(self, timeout_s: float):
        super().__init__()
        self.timeout = (CONNECT_TIMEOUT_S, timeout_s)

    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


def pacs_client(url: str, timeout_s: float) -> DICOMwebClientX:
    """MONAI Label's DICOMweb client (it tolerates PACSs that answer single parts without multipart), with timeouts."""
    username = settings.MONAI_LABEL_DATASTORE_USERNAME or settings.MONAI_LABEL_DICOMWEB_USERNAME
    password = settings.MONAI_LABEL_DATASTORE_PASSWORD or settings.MONAI_LABEL_DICOMWEB_PASSWORD
    session = create_session_from_user_pass(username, password) if username and password else requests.Session()
    adapter = _TimeoutAdapter(timeout_s)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    client = DICOMwebClientX(
        url=url,
        session=session,
        qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
        wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
        stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
    )
    # dicomweb-client retries every failure 5 times, waiting 2+4+8+16 s: a PACS that is gone would keep a viewer
    # waiting half a minute for the error. A hiccup still gets retried.
    client.set_http_retry_params(retry=True, max_attempts=RETRY_ATTEMPTS, wait_exponential_multiplier=RETRY_WAIT_MS)
    return client


@contextmanager
def pacs_call(pacs_url: str, action: str, consequence: str = NOTHING_SAVED) -> Iterator[None]:
    """Turns what `requests` raises while talking to the PACS into a `PacsError` that says what happened."""
    try:
        yield
    except requests.exceptions.ConnectTimeout as error:
        raise _error(503, pacs_url, action, "did not accept a connection in time", error, consequence) from error
    except requests.exceptions.ReadTimeout as error:
        raise _error(504, pacs_url, action, "stopped answering (timed out)", error, consequence) from error
    except requests.exceptions.HTTPError as error:
        status = error.response.status_code if error.response is not None else "an error"
        raise _error(502, pacs_url, action, f"answered HTTP {status}", error, consequence) from error
    except requests.exceptions.ConnectionError as error:
        if _never_connected(error):
            raise _error(503, pacs_url, action, "is not reachable", error, consequence) from error
        raise _error(502, pacs_url, action, "dropped the connection mid-transfer", error, consequence) from error
    except requests.exceptions.RequestException as error:
        raise _error(502, pacs_url, action, "broke off the transfer", error, consequence) from error


def _never_connected(error: Exception) -> bool:
    text = repr(error)
    return any(s in text for s in ("NewConnectionError", "Failed to establish", "Connection refused", "NameResolution"))


def _error(status: int, pacs_url: str, action: str, what: str, error: Exception, consequence: str) -> PacsError:
    reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    message = f"PACS error while {action}: the PACS at {pacs_url} {what} ({reason}). {consequence}".strip()
    logger.error(message)
    return PacsError(status_code=status, detail=message)

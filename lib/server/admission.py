"""Admission control: at most `max_pending_requests` heavy requests (inferences, uploads) served or waiting at once.

The models answer one request at a time, so a crowd of requests only queues; past the bound a client is told at once
to come back (503 with `Retry-After`) instead of waiting minutes on a connection that a proxy may cut. Everything runs
on the server's one event loop, so a plain counter needs no lock.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from lib.common.limits import RETRY_AFTER_S
from monailabel_app.core.errors import UnavailableError


class ServerBusyError(UnavailableError):
    retry_after_s = RETRY_AFTER_S


class Admission:
    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.active >= self.limit:
            raise ServerBusyError(
                f"The server is busy ({self.active} requests in progress, --conf max_pending_requests "
                f"{self.limit}); try again in {RETRY_AFTER_S} s."
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

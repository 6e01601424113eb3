"""Test support: an HTTP proxy between MONAI Label and Orthanc that a test can break, so "the PACS went away" happens
at a chosen moment: mid-transfer of a series, or while a SEG is being stored.

Only 127.0.0.1; one thread per connection; every upstream call has a timeout.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler
from typing import Optional
from urllib.parse import urlsplit

from tests.support.threaded_http import HOP_BY_HOP, ThreadedHttpServer


class PacsProxy:
    def __init__(self, upstream_url: str):
        self.upstream = urlsplit(upstream_url)
        self.trigger: Optional[tuple] = None  # (method, path fragment) of the request during which the PACS goes away
        self.away = threading.Event()  # set from then on: every request is dropped unanswered
        self._server = ThreadedHttpServer(self._handler())
        self.url = self._server.url

    def start(self) -> "PacsProxy":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def go_away_during(self, method: str, path_fragment: str) -> None:
        """A GET is cut half way through its answer; a POST gets no answer; later requests get none either."""
        self.trigger = (method, path_fragment)

    def come_back(self) -> None:
        self.trigger = None
        self.away.clear()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._forward()

            def do_POST(self):
                self._forward()

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                trigger = proxy.trigger
                cut = trigger is not None and self.command == trigger[0] and trigger[1] in self.path
                if cut:
                    proxy.trigger = None
                    proxy.away.set()
                if proxy.away.is_set() and (not cut or self.command == "POST"):
                    self.close_connection = True
                    return
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                upstream.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP | {"content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if cut:  # half the answer, then the connection drops
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        return Handler

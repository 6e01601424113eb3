"""Test support: one way to run an HTTP server inside the test process (a stand-in the app talks to: a viewer's web
server, a PACS proxy, a sign-in realm, an LLM endpoint, a page on another origin), on 127.0.0.1."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# a connection's own headers (RFC 9110, 7.6.1): a stand-in that proxies a request or an answer never forwards them
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class ThreadedHttpServer:
    """`handler` served from a background thread, one thread per connection; daemon threads, so a client that hangs
    never holds up a stop or the end of the tests. `port` 0 takes a free one; `url` is known from construction."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0):
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "ThreadedHttpServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "ThreadedHttpServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

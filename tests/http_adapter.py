"""A small HTTP server that turns requests into API Gateway REST proxy events for the in-process
handler, so real HTTP clients (tritonclient) can talk to it. Loopback only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from onnxfn.local.context import LocalContext
from onnxfn.local.events import api_gateway_event, response_body


def _make_handler(lambda_handler: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _dispatch(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            path, _, query = self.path.partition("?")
            event = api_gateway_event(self.command, path, body, dict(self.headers.items()), query)
            response = lambda_handler(event, LocalContext())
            payload = response_body(response)
            self.send_response(response["statusCode"])
            headers = dict(response.get("headers") or {})
            for key, values in (response.get("multiValueHeaders") or {}).items():
                headers[key] = values[-1]
            for key, value in headers.items():
                if key.lower() != "content-length":
                    self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _dispatch

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serve_handler(lambda_handler: Any) -> Iterator[str]:
    """Serve ``lambda_handler`` on 127.0.0.1 (a free port); yields ``host:port``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(lambda_handler))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

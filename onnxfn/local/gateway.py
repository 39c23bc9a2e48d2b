"""The local API Gateway: HTTP in, REST proxy events to the function pools, responses back.

Resources, methods, the API key requirement and binary media types come from the cloud assembly.
Routing follows API Gateway's precedence (a literal segment before ``{param}`` before
``{proxy+}``; a method before ``ANY``). API Gateway's own answers (an unknown resource or method, a
missing or wrong key, an unsigned or wrongly signed IAM request, a body too large for Lambda's
event, a function error, crash or timeout, the integration timeout) are rendered from the
template's gateway responses (``gateway_answers``). SigV4 is checked against the local credentials
(``sigv4``). The stage prefix (``/prod``) is optional, so the deployed URLs and Swagger UI's
requests both work.

Also served, outside the API: ``GET /_local/metrics`` (Prometheus), ``GET /_local/health`` and
Lambda's Invoke API (``POST /2015-03-31/functions/<name>/invocations``) for direct invocations.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hmac
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from contract.limits import API_GATEWAY_BODY_BYTES, SYNC_REQUEST_BYTES
from onnxfn.local import gateway_answers as answers
from onnxfn.local.assembly import LOCAL_REGION, ApiSpec, RouteSpec
from onnxfn.local.cloud import LOCAL_CREDENTIALS
from onnxfn.local.events import api_gateway_event
from onnxfn.local.functions import FunctionPool, Invocation
from onnxfn.local.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from onnxfn.local.metrics import MetricsRegistry
from onnxfn.local.sigv4 import verify
from onnxfn.local.worker import dumps, loads

_REASONS = {status.value: status.phrase for status in HTTPStatus}
MAX_REQUEST_BYTES = API_GATEWAY_BODY_BYTES
DEFAULT_INTEGRATION_TIMEOUT_S = 29.0
INVOKE_PREFIX = "/2015-03-31/functions/"


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    methods: dict[str, RouteSpec] = field(default_factory=dict)


class Router:
    """API Gateway's resource matching over the routes of the assembly."""

    def __init__(self, routes: Iterable[RouteSpec]) -> None:
        self._root = _Node()
        for route in routes:
            node = self._root
            for segment in route.segments:
                node = node.children.setdefault(segment, _Node())
            node.methods[route.method] = route

    def match(self, method: str, path: str) -> tuple[RouteSpec, dict[str, str]] | None:
        segments = [unquote(part) for part in path.split("/") if part]
        return self._match(self._root, segments, method.upper(), {})

    def _match(
        self, node: _Node, segments: list[str], method: str, params: dict[str, str]
    ) -> tuple[RouteSpec, dict[str, str]] | None:
        if not segments:
            route = node.methods.get(method) or node.methods.get("ANY")
            return (route, params) if route else None
        head, rest = segments[0], segments[1:]
        if head in node.children:
            found = self._match(node.children[head], rest, method, params)
            if found:
                return found
        for key, child in node.children.items():
            if key.startswith("{") and not key.endswith("+}"):
                found = self._match(child, rest, method, {**params, key[1:-1]: head})
                if found:
                    return found
        for key, child in node.children.items():
            if key.endswith("+}"):
                route = child.methods.get(method) or child.methods.get("ANY")
                if route:
                    return route, {**params, key[1:-2]: "/".join(segments)}
        return None


@dataclass
class RequestLog:
    method: str
    path: str
    status: int
    total_ms: float
    function: str = ""
    invocation: Invocation | None = None


def _chunked(read: Callable[[int], bytes], readline: Callable[[], bytes], limit: int) -> bytes | None:
    body = bytearray()
    while True:
        size = int(readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while readline().strip():
                pass
            return bytes(body)
        body.extend(read(size))
        readline()
        if len(body) > limit:
            return None


class Gateway:
    """The HTTP server; ``pools`` maps a function's logical id to its pool."""

    def __init__(
        self,
        api: ApiSpec | None,
        pools: Mapping[str, FunctionPool],
        metrics: MetricsRegistry,
        *,
        api_key: str | None,
        host: str = "127.0.0.1",
        port: int = 8080,
        integration_timeout_s: float = DEFAULT_INTEGRATION_TIMEOUT_S,
        on_request: Callable[[RequestLog], None] | None = None,
    ) -> None:
        self.api = api
        self.pools = pools
        self.metrics = metrics
        self.api_key = api_key
        self.router = Router(api.routes if api else ())
        self.integration_timeout_s = integration_timeout_s
        self.on_request = on_request
        self._by_name = {pool.runtime.name: pool for pool in pools.values()}
        self._by_name.update({pool.runtime.arn: pool for pool in pools.values()})
        self._slow = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="integration")
        self.server = ThreadingHTTPServer((host, port), self._handler_class())
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._slow.shutdown(wait=False, cancel_futures=True)

    # --- API -------------------------------------------------------------------------------------

    def _invoke(self, pool: FunctionPool, event: Any) -> Invocation | None:
        """Invoke, or None when the integration timeout passes first (504)."""
        if pool.runtime.timeout_s <= self.integration_timeout_s:
            return pool.invoke(event, wait_s=self.integration_timeout_s)
        future = self._slow.submit(pool.invoke, event, wait_s=self.integration_timeout_s)
        try:
            return future.result(timeout=self.integration_timeout_s)
        except concurrent.futures.TimeoutError:
            return None

    def handle_api(
        self, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> tuple[int, dict[str, list[str]], bytes, RequestLog]:
        """One request through the API, as API Gateway answers it; the log line says how it went."""
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        log = RequestLog(method, path, 0, 0.0)
        status, out, data = self._answer(method, path, query, headers, body, request_id, log)
        log.status = status
        log.total_ms = (time.perf_counter() - started) * 1000
        return status, out, data, log

    def _answer(
        self,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        request_id: str,
        log: RequestLog,
    ) -> tuple[int, dict[str, list[str]], bytes]:
        api = self.api
        stage_path = path
        if api and (path == f"/{api.stage}" or path.startswith(f"/{api.stage}/")):
            stage_path = path[len(api.stage) + 1 :] or "/"
        match = self.router.match(method, stage_path) if api else None
        single = {}
        multi: dict[str, list[str]] = {}
        for key, value in headers:
            single[key] = value
            multi.setdefault(key, []).append(value)
        lowered = {k.lower(): v for k, v in single.items()}
        if api is None or match is None:
            return self._error(answers.MISSING_ROUTE, request_id)
        route, params = match
        denied = self._denied(route, method, path, query, lowered, body)
        if denied is not None:
            return self._error(denied, request_id)
        pool = self.pools[route.function_id]
        log.function = pool.runtime.name
        event = api_gateway_event(
            method,
            stage_path,
            body,
            single,
            query,
            stage=api.stage,
            binary_media_types=api.binary_media_types,
            resource=route.resource_path,
            path_parameters=params or None,
            api_key=lowered.get("x-api-key") if route.api_key_required else None,
            request_id=request_id,
            multi_value_headers=multi,
        )
        if body is not None and len(dumps(event)) > SYNC_REQUEST_BYTES:  # Lambda refuses the invocation
            return self._error(answers.TOO_LARGE, request_id)
        invocation = self._invoke(pool, event)
        log.invocation = invocation
        return self._integration_answer(invocation, lowered.get("accept", ""), request_id)

    def _error(self, error: answers.GatewayError, request_id: str) -> tuple[int, dict[str, list[str]], bytes]:
        return answers.render(self.api.gateway_responses if self.api else {}, error, request_id)

    def _denied(
        self, route: Any, method: str, path: str, query: str, lowered: Mapping[str, str], body: bytes | None
    ) -> answers.GatewayError | None:
        """API Gateway's answer when the caller may not call ``route``: no or a wrong SigV4 signature
        for IAM, no or a wrong API key."""
        if route.authorization == "AWS_IAM":
            if not lowered.get("authorization", "").startswith("AWS4-HMAC-SHA256"):
                return answers.MISSING_ROUTE  # API Gateway answers an unsigned request like a missing route
            url = f"http://{lowered.get('host', '')}{path}" + (f"?{query}" if query else "")
            problem = verify(method, url, lowered, body, LOCAL_CREDENTIALS, LOCAL_REGION)
            if problem is not None:
                return answers.signature_error(problem)
        given = lowered.get("x-api-key")
        if route.api_key_required and (
            self.api_key is None or given is None or not hmac.compare_digest(given.encode(), self.api_key.encode())
        ):
            return answers.INVALID_API_KEY
        return None

    def _integration_answer(
        self, invocation: Any, accept: str, request_id: str
    ) -> tuple[int, dict[str, list[str]], bytes]:
        """The function's answer as API Gateway returns it, or the gateway's own error."""
        if invocation is None:
            return self._error(answers.TIMED_OUT, request_id)
        if invocation.status == "throttled":
            return self._error(answers.FUNCTION_THROTTLED, request_id)
        mapped = self._map_response(invocation.payload, accept) if invocation.ok else None
        if mapped is None:  # a function error, or API Gateway's "Malformed Lambda proxy response"
            return self._error(answers.FUNCTION_FAILED, request_id)
        status, out_headers, data = mapped
        out_headers.setdefault("x-amzn-RequestId", [request_id])
        return status, out_headers, data

    def _map_response(self, payload: Any, accept: str) -> tuple[int, dict[str, list[str]], bytes] | None:
        if not isinstance(payload, dict) or not isinstance(payload.get("statusCode"), int):
            return None
        headers: dict[str, list[str]] = {}
        for key, value in (payload.get("headers") or {}).items():
            headers[key] = [str(value)]
        for key, values in (payload.get("multiValueHeaders") or {}).items():
            headers[key] = [str(v) for v in values]
        body = payload.get("body")
        if body is not None and not isinstance(body, str):
            return None
        data = (body or "").encode("utf-8")
        if payload.get("isBase64Encoded") and self._binary_response(headers, accept):
            try:
                data = base64.b64decode(body or "", validate=True)
            except ValueError:
                return None
        if not any(key.lower() == "content-type" for key in headers):
            headers["Content-Type"] = ["application/json"]
        return int(payload["statusCode"]), headers, data

    def _binary_response(self, headers: Mapping[str, list[str]], accept: str) -> bool:
        types = self.api.binary_media_types if self.api else ()
        if "*/*" in types:
            return True
        content_type = next((v[0] for k, v in headers.items() if k.lower() == "content-type"), "")
        candidates = {content_type.split(";")[0].strip(), *(a.split(";")[0].strip() for a in accept.split(","))}
        return bool(candidates & set(types))

    # --- Lambda Invoke API -----------------------------------------------------------------------

    def handle_invoke(self, path: str, body: bytes | None) -> tuple[int, dict[str, list[str]], bytes]:
        name = unquote(path[len(INVOKE_PREFIX) :].removesuffix("/invocations"))
        pool = self._by_name.get(name) or self.pools.get(name)
        if pool is None:
            message = {"Type": "User", "message": f"Function not found: {name}"}
            return 404, {"x-amzn-ErrorType": ["ResourceNotFoundException"]}, dumps(message)
        try:
            event = loads(body or b"{}")
        except ValueError:
            return (
                400,
                {"x-amzn-ErrorType": ["InvalidRequestContentException"]},
                dumps({"Type": "User", "message": "Could not parse request body into json"}),
            )
        invocation = pool.invoke(event)
        headers = {"Content-Type": ["application/json"], "x-amzn-RequestId": [invocation.request_id]}
        if invocation.ok:
            return 200, headers, dumps(invocation.payload)
        headers["X-Amz-Function-Error"] = ["Unhandled"]
        return 200, headers, dumps(invocation.error or {})

    # --- HTTP ------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (_Handler,), {"gateway": self})


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 in front of ``gateway`` (set per gateway by ``_handler_class``)."""

    gateway: Gateway
    protocol_version = "HTTP/1.1"
    server_version = "onnxfn-local"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def _body(self) -> bytes | bool | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunked = _chunked(self.rfile.read, self.rfile.readline, MAX_REQUEST_BYTES)
            return False if chunked is None else chunked
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            return False
        return self.rfile.read(length) if length else None

    def _send(self, status: int, headers: Mapping[str, list[str]], data: bytes) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}", f"Date: {self.date_time_string()}"]
        for key, values in headers.items():
            if key.lower() in ("content-length", "transfer-encoding", "connection", "date"):
                continue
            lines.extend(f"{key}: {value}" for value in values)
        lines.append(f"Content-Length: {len(data)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        # One write for head and body: one TCP segment for a small answer.
        self.wfile.write(head if self.command == "HEAD" else head + data)

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._body()
        if body is False:
            self.close_connection = True
            self._send(*self.gateway._error(answers.TOO_LARGE, str(uuid.uuid4())))
            return
        assert body is not True
        if path == "/_local/metrics" and self.command == "GET":
            self._send(200, {"Content-Type": [METRICS_CONTENT_TYPE]}, self.gateway.metrics.render())
            return
        if path == "/_local/health" and self.command == "GET":
            self._send(200, {"Content-Type": ["application/json"]}, dumps({"status": "ok"}))
            return
        if path.startswith(INVOKE_PREFIX) and path.endswith("/invocations") and self.command == "POST":
            self._send(*self.gateway.handle_invoke(path, body))
            return
        status, headers, data, log = self.gateway.handle_api(
            self.command, path, query, list(self.headers.items()), body
        )
        self._send(status, headers, data)
        if self.gateway.on_request is not None:
            self.gateway.on_request(log)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def __getattr__(self, name: str) -> Any:
        # Any other method (TRACE, PROPFIND, ...) gets API Gateway's answer, not a 501.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        pass

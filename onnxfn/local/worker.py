"""The process one local Lambda execution environment runs: init once, then invocations.

Started by :mod:`onnxfn.local.functions` with the function's environment. The handler module is
imported once (the init phase, timed and reported as Lambda reports ``Init Duration``), then each
invocation arrives on stdin as a length-prefixed JSON frame and its result or error goes back on
the pipe named by ``ONNXFN_LOCAL_CONTROL_FD``. stdout and stderr are the function's log stream,
read by the parent (EMF metrics included), exactly as Lambda captures them.

Kept to the standard library (plus orjson when present) so the measured init is the handler's own.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import struct
import sys
import threading
import time
import traceback
from typing import Any, BinaryIO

from onnxfn.local.context import LocalContext

HEADER = struct.Struct(">I")
CONTROL_FD_ENV = "ONNXFN_LOCAL_CONTROL_FD"

try:
    import orjson

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a layer dependency

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode("utf-8")

    def loads(data: bytes | str) -> Any:  # type: ignore[misc]
        return json.loads(data)


def write_frame(stream: BinaryIO, message: Any) -> None:
    data = dumps(message)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: BinaryIO) -> Any | None:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (length,) = HEADER.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        return None
    return loads(data)


def _context(request_id: str, deadline_ms: float) -> LocalContext:
    """The Lambda context for one invocation, from this environment and the caller's deadline."""
    return LocalContext(
        function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""),
        function_version=os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        memory_limit_in_mb=int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")),
        invoked_function_arn=os.environ.get("ONNXFN_LOCAL_FUNCTION_ARN", ""),
        log_group_name=os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", ""),
        log_stream_name=os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
        aws_request_id=request_id,
        timeout_s=max(0.0, deadline_ms / 1000 - time.time()),
    )


def _die_with_parent() -> None:
    """Exit when the serving process goes away, even mid-invocation, so no worker is left behind.

    An idle worker also ends on its own when stdin closes. (``PR_SET_PDEATHSIG`` is no use here:
    it fires when the *thread* that started the worker ends, and request threads end all the time.)
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(137)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _error(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorType": error_type or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc)[1:],
    }


def _flush_logs_periodically(interval_s: float = 0.2) -> None:
    """stdout is block-buffered (one write per invocation); a long invocation's lines still show."""

    def flush() -> None:
        while True:
            time.sleep(interval_s)
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except (OSError, ValueError):
                return

    threading.Thread(target=flush, name="log-flush", daemon=True).start()


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the serving process decides when workers stop
    _die_with_parent()
    _flush_logs_periodically()
    requests = sys.stdin.buffer
    replies = os.fdopen(int(os.environ.pop(CONTROL_FD_ENV)), "wb", buffering=0)
    task_root = os.environ.get("LAMBDA_TASK_ROOT")
    if task_root and task_root not in sys.path:
        sys.path.insert(0, task_root)
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    started = time.perf_counter()
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # the init error is reported, as Lambda reports Runtime.ImportModuleError
        traceback.print_exc()
        write_frame(replies, {"type": "init_error", "error": _error(exc, "Runtime.ImportModuleError")})
        return 1
    init_ms = (time.perf_counter() - started) * 1000
    write_frame(replies, {"type": "ready", "init_ms": init_ms, "max_rss_mb": _max_rss_mb()})
    while True:
        message = read_frame(requests)
        if message is None:
            return 0
        request_id = message["request_id"]
        os.environ["_X_AMZN_TRACE_ID"] = message.get("trace_id", "")
        context = _context(request_id, message["deadline_ms"])
        started = time.perf_counter()
        try:
            result = handler(message["event"], context)
            reply: dict[str, Any] = {"type": "result", "payload": result}
        except Exception as exc:
            traceback.print_exc()
            reply = {"type": "error", "error": _error(exc)}
        reply["duration_ms"] = (time.perf_counter() - started) * 1000
        reply["max_rss_mb"] = _max_rss_mb()
        # The answer first, then the invocation's log lines in one write: the caller is not kept
        # waiting while the serving process reads the logs.
        try:
            write_frame(replies, reply)
        except TypeError as exc:  # what the handler returned is not JSON
            write_frame(
                replies, {**reply, "type": "error", "payload": None, "error": _error(exc, "Runtime.MarshalError")}
            )
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())

"""The process one local Lambda execution environment runs: init once, then invocations.

Started by :mod:`onnxfn.local.functions` with the function's environment, by path, with the
interpreter of the function's runtime (see :mod:`onnxfn.local.runtime`): ``sys.path`` becomes the
function code and its layer (``ONNXFN_LOCAL_SYS_PATH``) before the standard library, and after the
handler's import (the init, unthrottled as Lambda's init CPU burst) the process moves itself into
the cgroup that holds it to its memory's CPU share (``ONNXFN_LOCAL_CGROUP``). The handler module is
imported once (the init phase, timed and reported as Lambda reports ``Init Duration``), then each
invocation arrives on stdin as a length-prefixed JSON frame and its result or error goes back on
the pipe named by ``ONNXFN_LOCAL_CONTROL_FD``. stdout and stderr are the function's log stream,
read by the parent (EMF metrics included), exactly as Lambda captures them.

Standard library only (it runs before anything is on the path), so the measured init is the handler's own.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import resource
import signal
import struct
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO

HEADER = struct.Struct(">I")
CONTROL_FD_ENV = "ONNXFN_LOCAL_CONTROL_FD"
SYS_PATH_ENV = "ONNXFN_LOCAL_SYS_PATH"  # the function code and layer folders, os.pathsep-separated
CGROUP_ENV = "ONNXFN_LOCAL_CGROUP"  # the CPU quota folder to join
INIT_BURST_ENV = "ONNXFN_LOCAL_INIT_BURST"  # "1": join the quota after init; "0": before
CPU_LABEL_ENV = "ONNXFN_LOCAL_CPU"  # what the plan says of the CPU, reported back in "ready"
_PRIVATE = (CONTROL_FD_ENV, SYS_PATH_ENV, CGROUP_ENV, INIT_BURST_ENV, CPU_LABEL_ENV)


def _local_context() -> Any:
    """``onnxfn/local/context.py``'s LocalContext, loaded by path: the onnxfn package is not on the path."""
    spec = importlib.util.spec_from_file_location("onnxfn_local_context", Path(__file__).with_name("context.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module.LocalContext


# In a faithful worker orjson is not importable yet (only the standard library is on the path).
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


def _context(context_class: Any, request_id: str, deadline_ms: float) -> Any:
    """The Lambda context for one invocation, from this environment and the caller's deadline."""
    return context_class(
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


def _join_cgroup(path: str) -> str:
    """Move this process (every thread) into the CPU quota at ``path``; "" or why it failed."""
    try:
        Path(path, "cgroup.procs").write_text(str(os.getpid()))
    except OSError as exc:
        return f"could not join {path}: {exc.strerror}"
    return ""


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the serving process decides when workers stop
    _die_with_parent()
    _flush_logs_periodically()
    requests = sys.stdin.buffer
    settings = {name: os.environ.pop(name, "") for name in _PRIVATE}
    replies = os.fdopen(int(settings[CONTROL_FD_ENV]), "wb", buffering=0)
    context_class = _local_context()
    # Lambda's order: the function code (/var/task), the layers (/opt/python/lib/..., /opt/python).
    paths = [p for p in settings[SYS_PATH_ENV].split(os.pathsep) if p]
    sys.path[:0] = [p for p in paths if p not in sys.path]
    cgroup, cpu_problem = settings[CGROUP_ENV], ""
    if cgroup and settings[INIT_BURST_ENV] == "0":
        cpu_problem = _join_cgroup(cgroup)
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    started = time.perf_counter()
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # the init error is reported, as Lambda reports Runtime.ImportModuleError
        traceback.print_exc()
        write_frame(replies, {"type": "init_error", "error": _error(exc, "Runtime.ImportModuleError")})
        return 1
    init_ms = (time.perf_counter() - started) * 1000
    if cgroup and settings[INIT_BURST_ENV] != "0":
        cpu_problem = _join_cgroup(cgroup)  # init is over: from now on, the memory's CPU share
    ready = {"type": "ready", "init_ms": init_ms, "max_rss_mb": _max_rss_mb(), "cpu": settings[CPU_LABEL_ENV]}
    ready.update({"python": sys.version.split()[0], "executable": sys.executable, "cpu_problem": cpu_problem})
    write_frame(replies, ready)
    while True:
        message = read_frame(requests)
        if message is None:
            return 0
        request_id = message["request_id"]
        os.environ["_X_AMZN_TRACE_ID"] = message.get("trace_id", "")
        context = _context(context_class, request_id, message["deadline_ms"])
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

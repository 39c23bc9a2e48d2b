"""Local Lambda execution environments: one worker process each, pooled per function.

A :class:`Worker` is one execution environment: a fresh Python process with the function's
environment, a private ``TMPDIR``, its handler imported once (the cold start, measured), then
invocations one at a time. A :class:`FunctionPool` keeps up to ``concurrency`` of them per
function, started on demand and reused while warm, as Lambda reuses environments. An invocation
that outlives the function's timeout kills its worker (Lambda discards a timed-out environment);
one whose process dies is reported as Lambda reports a runtime exit. Either way the next
invocation gets a fresh worker.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxfn.local.runtime import CpuQuota, LaunchPlan
from onnxfn.local.worker import CONTROL_FD_ENV, HEADER, dumps, loads

INIT_TIMEOUT_S = 10.0  # Lambda's init phase limit (on-demand functions)

LogSink = Callable[[str, str], None]  # (function name, one log line)


@dataclass(frozen=True)
class FunctionRuntime:
    """What a worker needs to run one function: resolved environment, code, limits."""

    logical_id: str
    name: str
    handler: str
    code_dir: Path
    environment: Mapping[str, str]
    memory_mb: int
    timeout_s: float
    arn: str
    launch: LaunchPlan
    kind: str = "api"
    model: str = ""


@dataclass
class Invocation:
    """The outcome of one invocation, with Lambda's error shape when it failed."""

    function: str
    request_id: str
    status: str = "ok"  # ok | error | timeout | crash | throttled
    payload: Any = None
    error: dict[str, Any] | None = None
    duration_ms: float = 0.0  # inside the handler
    round_trip_ms: float = 0.0  # from the caller's point of view, cold start included
    init_ms: float | None = None  # the handler's import, on a cold start
    start_ms: float | None = None  # process start to ready, on a cold start
    max_rss_mb: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def cold(self) -> bool:
        return self.init_ms is not None


class WorkerFailed(Exception):
    """The worker could not start (init error or init timeout)."""

    def __init__(self, error: dict[str, Any], status: str = "error") -> None:
        super().__init__(error.get("errorMessage", "init failed"))
        self.error = error
        self.status = status


class Worker:
    """One execution environment: a process running :mod:`onnxfn.local.worker`."""

    def __init__(self, runtime: FunctionRuntime, index: int, log_sink: LogSink) -> None:
        self.runtime = runtime
        launch = runtime.launch
        self.tmp_dir = tempfile.mkdtemp(prefix=f"onnxfn-{runtime.logical_id[:24]}-")
        # Each execution environment gets its own CPU share, as each Lambda sandbox does.
        self.quota = CpuQuota(f"{runtime.logical_id[:40]}-{index}", launch.cpu.vcpus) if launch.cpu.enforced else None
        read_fd, write_fd = os.pipe()
        stream = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        env = {
            **runtime.environment,
            **launch.environment(self.quota.path if self.quota else None),
            "TMPDIR": self.tmp_dir,
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            CONTROL_FD_ENV: str(write_fd),
        }
        started = time.perf_counter()
        self.process = subprocess.Popen(
            list(launch.command),
            cwd=runtime.code_dir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            close_fds=True,
            start_new_session=True,  # a terminal's Ctrl-C reaches the server, which stops the workers
        )
        os.close(write_fd)
        self._replies = os.fdopen(read_fd, "rb", buffering=0)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._replies, selectors.EVENT_READ)
        self.index = index
        self._log_thread = threading.Thread(
            target=self._pump_logs, args=(log_sink,), name=f"logs-{runtime.name}-{index}", daemon=True
        )
        self._log_thread.start()
        ready = self._read(INIT_TIMEOUT_S)
        self.start_ms = (time.perf_counter() - started) * 1000
        if ready is None:
            self.kill()
            timed_out = self.process.returncode is None or self.start_ms >= INIT_TIMEOUT_S * 1000
            raise WorkerFailed(
                {
                    "errorType": "Runtime.InitTimeout" if timed_out else "Runtime.ExitError",
                    "errorMessage": f"init did not complete (worker exit status {self.process.returncode})",
                },
                "timeout" if timed_out else "crash",
            )
        if ready.get("type") != "ready":
            self.kill()
            raise WorkerFailed(ready.get("error") or {"errorType": "Runtime.Unknown", "errorMessage": str(ready)})
        self.init_ms: float = float(ready["init_ms"])
        self.python = str(ready.get("python", ""))
        self.cpu_problem = str(ready.get("cpu_problem", ""))  # the quota could not be joined
        self.invocations = 0

    def _pump_logs(self, log_sink: LogSink) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            log_sink(self.runtime.name, raw.decode("utf-8", "replace").rstrip("\n"))

    def _read_exact(self, size: int, deadline: float) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                return None
            chunk = self._replies.read(size - len(chunks))
            if not chunk:
                raise EOFError
            chunks.extend(chunk)
        return bytes(chunks)

    def _read(self, timeout_s: float) -> Any | None:
        """The next frame from the worker; None on timeout or when the process ended."""
        deadline = time.monotonic() + timeout_s
        try:
            header = self._read_exact(HEADER.size, deadline)
            if header is None:
                return None
            body = self._read_exact(HEADER.unpack(header)[0], deadline)
        except EOFError:
            self.process.wait(timeout=5)
            return None
        return None if body is None else loads(body)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def invoke(self, event: Any, request_id: str, timeout_s: float) -> Invocation:
        result = Invocation(function=self.runtime.name, request_id=request_id)
        message = {
            "request_id": request_id,
            "deadline_ms": time.time() * 1000 + timeout_s * 1000,
            "trace_id": f"Root=1-{int(time.time()):08x}-{os.urandom(12).hex()};Sampled=0",
            "event": event,
        }
        frame = dumps(message)
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(HEADER.pack(len(frame)) + frame)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._crashed(result)
        reply = self._read(timeout_s)
        self.invocations += 1
        if reply is None:
            if self.alive:
                self.kill()
                result.status = "timeout"
                result.duration_ms = timeout_s * 1000
                result.error = {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"RequestId: {request_id} Error: Task timed out after {timeout_s:.2f} seconds",
                }
                return result
            return self._crashed(result)
        result.duration_ms = float(reply.get("duration_ms", 0.0))
        result.max_rss_mb = float(reply.get("max_rss_mb", 0.0))
        if reply["type"] == "result":
            result.payload = reply.get("payload")
        else:
            result.status = "error"
            result.error = reply.get("error")
        return result

    def _crashed(self, result: Invocation) -> Invocation:
        code = self.process.wait(timeout=5)
        reason = f"signal: {-code}" if code < 0 else f"exit status {code}"
        result.status = "crash"
        result.error = {
            "errorType": "Runtime.ExitError",
            "errorMessage": f"RequestId: {result.request_id} Error: Runtime exited with error: {reason}",
        }
        self.close()
        return result

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
        self.close()

    def close(self) -> None:
        """End the process (stdin closed: the worker exits its loop) and remove its /tmp."""
        if self.alive and self.process.stdin is not None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
        if self.process.returncode is None:
            self.process.wait(timeout=5)
        self._selector.close()
        self._replies.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        if self.quota is not None:
            self.quota.close()


@dataclass
class PoolStats:
    invocations: int = 0
    cold_starts: list[float] = field(default_factory=list)  # init ms of each cold start
    errors: int = 0


class FunctionPool:
    """Up to ``concurrency`` warm workers for one function, started on demand."""

    def __init__(
        self,
        runtime: FunctionRuntime,
        concurrency: int,
        log_sink: LogSink,
        on_invocation: Callable[[FunctionRuntime, Invocation], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.concurrency = concurrency
        self._log_sink = log_sink
        self._on_invocation = on_invocation
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._workers: set[Worker] = set()
        self._next_index = 0
        self._closed = False
        self.stats = PoolStats()

    @property
    def workers(self) -> int:
        with self._lock:
            return len(self._workers)

    def pids(self) -> list[int]:
        with self._lock:
            return [worker.process.pid for worker in self._workers]

    def _take(self) -> Worker | None:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
                self._workers.discard(worker)
            self._next_index += 1
            return None

    def invoke(self, event: Any, *, wait_s: float | None = None, request_id: str | None = None) -> Invocation:
        """Run one invocation on a warm worker, or a new one; waits up to ``wait_s`` for a slot."""
        request_id = request_id or str(uuid.uuid4())
        started = time.perf_counter()
        if self._closed or not self._slots.acquire(timeout=wait_s):
            result = Invocation(self.runtime.name, request_id, status="throttled")
            result.error = {"errorType": "TooManyRequestsException", "errorMessage": "Rate Exceeded."}
            return self._finish(result, started)
        try:
            worker = self._take()
            init_ms = start_ms = None
            if worker is None:
                try:
                    worker = Worker(self.runtime, self._next_index, self._log_sink)
                except WorkerFailed as exc:
                    return self._finish(Invocation(self.runtime.name, request_id, exc.status, error=exc.error), started)
                with self._lock:
                    self._workers.add(worker)
                init_ms, start_ms = worker.init_ms, worker.start_ms
            result = worker.invoke(event, request_id, self.runtime.timeout_s)
            result.init_ms, result.start_ms = init_ms, start_ms
            with self._lock:
                if worker.alive and not self._closed:
                    self._idle.append(worker)
                else:
                    self._workers.discard(worker)
            if self._closed:
                worker.close()
            return self._finish(result, started)
        finally:
            self._slots.release()

    def _finish(self, result: Invocation, started: float) -> Invocation:
        result.round_trip_ms = (time.perf_counter() - started) * 1000
        self.stats.invocations += 1
        if result.init_ms is not None:
            self.stats.cold_starts.append(result.init_ms)
        if not result.ok:
            self.stats.errors += 1
        if self._on_invocation is not None:
            self._on_invocation(self.runtime, result)
        return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
            self._idle.clear()
        for worker in workers:
            worker.kill()

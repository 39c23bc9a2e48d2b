"""What ``onnxfn serve`` adds over calling the handler in-process, and each function's cold start.

Three ways to run the same ``digits`` request (batch 1, JSON), measured in interleaved rounds in
one process run so the machine's noise hits them alike:

- in-process: ``handlers.api.lambda_handler(event, context)`` called directly (the floor);
- pool: the same event through the worker pool (pipe to the worker process and back);
- HTTP: a kept-alive HTTP request through the local API Gateway of an ``onnxfn serve`` process
  (routing, key check, event building, worker, response mapping), as a client sees it.

Cold starts: for every function of the app, fresh workers are started and timed (process start to
ready, and the handler's import alone, Lambda's ``Init Duration``).

Run: ``.venv/bin/python -m benchmarks.serve_overhead`` (``make bench``); writes
``benchmarks/results/serve.json``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.timing import ROOT
from onnxfn.local.context import LocalContext
from onnxfn.local.events import api_gateway_event
from onnxfn.local.functions import FunctionPool, Worker
from onnxfn.local.serve import LocalApp, ServeOptions
from onnxfn.local.synth import stale_reason, synthesize

ROUNDS = 20
PER_ROUND = 50
COLD_STARTS = 5
RESULTS = ROOT / "benchmarks" / "results" / "serve.json"
PATH = "/v2/models/digits/infer"


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _digits_body() -> bytes:
    from sklearn.datasets import load_digits

    pixels = load_digits().data[:1].astype("float32")
    request = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels.tolist()}]}
    return json.dumps(request).encode()


def _start_server(app_dir: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """``onnxfn serve`` in its own process, as a developer runs it (one worker per function)."""
    state_file = Path(tempfile.mkdtemp()) / "serve.json"
    command = [sys.executable, "-m", "onnxfn.cli", "serve", "--port", "0", "--app", str(app_dir)]
    command += ["--synth", "never", "--concurrency", "1", "--state-file", str(state_file)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not state_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("onnxfn serve did not start")
        time.sleep(0.1)
    return process, json.loads(state_file.read_text())


def _digits_event(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """The API Gateway event of the digits request, built afresh for every call (as the gateway does)."""
    return api_gateway_event(
        "POST",
        PATH,
        body,
        headers,
        binary_media_types=("*/*",),
        resource="/v2/models/digits/{proxy+}",
        path_parameters={"proxy": "infer"},
    )


def _in_process_call(pool: FunctionPool, body: bytes, headers: dict[str, str]) -> Callable[[], None]:
    """The handler called directly in this process, with the function's environment (the floor)."""
    # The same function environment in this process (the model comes from the same moto).
    for key, value in pool.runtime.environment.items():
        if key not in ("TMPDIR", "PATH", "HOME"):
            os.environ[key] = value
    from handlers import api
    from handlers.runtime.observability import logger

    # The handler logs and prints EMF as in Lambda; in-process those lines go to /dev/null.
    sink = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    logger.registered_handler.setStream(sink)  # type: ignore[attr-defined]

    def in_process() -> None:
        with contextlib.redirect_stdout(sink):
            response = api.lambda_handler(_digits_event(body, headers), LocalContext())
        assert response["statusCode"] == 200

    return in_process


def _pool_call(
    pool: FunctionPool, body: bytes, headers: dict[str, str], inside_worker: list[float]
) -> Callable[[], None]:
    """The same event through the worker pool; each call's time inside the handler goes to ``inside_worker``."""

    def through_pool() -> None:
        result = pool.invoke(_digits_event(body, headers))
        assert result.ok and result.payload["statusCode"] == 200
        inside_worker.append(result.duration_ms)

    return through_pool


def _http_call(connection: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> Callable[[], None]:
    """The request over a kept-alive connection to ``onnxfn serve``, as a client sends it."""

    def over_http() -> None:
        connection.request("POST", PATH, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 200

    return over_http


def _time_paths(calls: dict[str, Callable[[], None]], rounds: int, per_round: int) -> dict[str, list[float]]:
    """Milliseconds per call of each path, in interleaved rounds (after 20 untimed calls each)."""
    for fn in calls.values():
        for _ in range(20):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            for _ in range(per_round):
                started = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def _measure_paths(
    app: LocalApp, app_dir: Path, rounds: int, per_round: int
) -> tuple[dict[str, list[float]], list[float]]:
    """The three paths' samples (in-process, pool, HTTP) and the handler's time inside the worker."""
    state = app.state()
    pool = next(p for p in app.pools.values() if p.runtime.model == "digits" and p.runtime.kind == "api")
    body = _digits_body()
    headers = {"Content-Type": "application/json", "x-api-key": state["api_key"]}
    in_process = _in_process_call(pool, body, headers)
    inside_worker: list[float] = []
    through_pool = _pool_call(pool, body, headers, inside_worker)
    server, server_state = _start_server(app_dir)
    connection = http.client.HTTPConnection(server_state["url"].removeprefix("http://"))
    over_http = _http_call(connection, body, {**headers, "x-api-key": server_state["api_key"]})
    samples = _time_paths({"in_process": in_process, "pool": through_pool, "http": over_http}, rounds, per_round)
    connection.close()
    server.send_signal(signal.SIGINT)
    server.wait(timeout=30)
    return samples, inside_worker


def _cold_starts(app: LocalApp, cold_starts: int) -> dict[str, dict[str, Any]]:
    """Per function: median process start to ready and handler import of ``cold_starts`` fresh workers."""
    cold: dict[str, dict[str, Any]] = {}
    for runtime_pool in app.pools.values():
        runtime = runtime_pool.runtime
        inits, starts = [], []
        for index in range(cold_starts):
            worker = Worker(runtime, 100 + index, lambda *_: None)
            inits.append(worker.init_ms)
            starts.append(worker.start_ms)
            worker.close()
        cold[runtime.name] = {
            "kind": runtime.kind,
            "model": runtime.model,
            "init_ms_median": statistics.median(inits),
            "start_to_ready_ms_median": statistics.median(starts),
        }
    return cold


def _record(
    samples: dict[str, list[float]],
    inside_worker: list[float],
    cold: dict[str, dict[str, Any]],
    runs: int,
    cold_starts: int,
) -> dict[str, Any]:
    """What serve.json holds: the paths' p50 and p90, the overheads and the cold starts."""
    p50 = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "date": time.strftime("%Y-%m-%d"),
        "model": "digits",
        "request": "POST /v2/models/digits/infer, batch 1, JSON",
        "runs": runs,
        "p50_ms": p50,
        "handler_inside_worker_p50_ms": statistics.median(inside_worker),
        "p90_ms": {name: _percentile(values, 0.9) for name, values in samples.items()},
        "overhead_p50_ms": {
            "pool_over_in_process": p50["pool"] - p50["in_process"],
            "http_over_in_process": p50["http"] - p50["in_process"],
        },
        "target_overhead_p50_ms": 1.0,
        "cold_starts": cold,
        "cold_start_runs": cold_starts,
    }


def _print_tables(console: Console, record: dict[str, Any], results: Path) -> None:
    """The paths' latencies and the cold starts as terminal tables, then where they were written."""
    p50 = record["p50_ms"]
    table = Table(title=f"digits batch 1 through onnxfn serve ({record['runs']} runs each, interleaved)")
    for column in ("path", "p50 ms", "p90 ms", "p50 over in-process ms"):
        table.add_column(column, justify="right")
    for name, label in (("in_process", "handler in-process"), ("pool", "worker pool (pipe)"), ("http", "HTTP gateway")):
        table.add_row(
            label,
            f"{p50[name]:.3f}",
            f"{record['p90_ms'][name]:.3f}",
            "-" if name == "in_process" else f"{p50[name] - p50['in_process']:.3f}",
        )
    console.print(table)
    console.print(f"handler time inside the worker (pool path), p50: {record['handler_inside_worker_p50_ms']:.3f} ms")
    colds = Table(title=f"worker cold start per function (median of {record['cold_start_runs']})")
    for column in ("function", "kind", "model", "process start → ready ms", "handler import (init) ms"):
        colds.add_column(column, justify="right")
    for name, values in record["cold_starts"].items():
        colds.add_row(
            name,
            str(values["kind"]),
            str(values["model"]),
            f"{values['start_to_ready_ms_median']:.0f}",
            f"{values['init_ms_median']:.0f}",
        )
    console.print(colds)
    console.print(f"written to {results}")


def main(
    rounds: int = ROUNDS, per_round: int = PER_ROUND, cold_starts: int = COLD_STARTS, results: Path = RESULTS
) -> dict[str, Any]:
    """Measure, print the tables, write ``results`` (serve.json) and return what it holds."""
    console = Console()
    app_dir = ROOT / "cdk.out"
    if stale_reason(ROOT, app_dir):
        synthesize(ROOT, app_dir)
    app = LocalApp(ServeOptions(app_dir=app_dir, port=0, state_file=None, concurrency=1)).start()
    try:
        samples, inside_worker = _measure_paths(app, app_dir, rounds, per_round)
        cold = _cold_starts(app, cold_starts)
    finally:
        app.stop()
    record = _record(samples, inside_worker, cold, rounds * per_round, cold_starts)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(record, indent=2) + "\n")
    _print_tables(console, record, results)
    return record


if __name__ == "__main__":
    main()

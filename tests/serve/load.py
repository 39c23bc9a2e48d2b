"""A bounded load test against a running ``onnxfn serve``: wrk, loopback only.

Each request kind (valid inferences, metadata, and invalid requests with their expected 4xx) runs
in its own wrk process, so every response can be checked against the status its request must get;
together they hold ``connections`` concurrent clients for ``seconds``. Meanwhile the resident memory
of the server and its workers is sampled every second, so growth across the run shows.

Used by ``tests/serve/test_load.py`` (bounded, in ``make test``) and ``make load`` (longer).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WRK = shutil.which("wrk") or "/usr/bin/wrk"

# Counts responses by status; done() prints one JSON line with the expected status's share and
# latency percentiles (microseconds).
LUA = r"""
local expected = tonumber(os.getenv("LOAD_EXPECTED"))
local method, path, body = os.getenv("LOAD_METHOD"), os.getenv("LOAD_PATH"), os.getenv("LOAD_BODY")
local key, content_type = os.getenv("LOAD_KEY"), os.getenv("LOAD_CONTENT_TYPE")
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  unexpected = 0
  responses = 0
  local headers = {}
  if key ~= "" then headers["x-api-key"] = key end
  if content_type ~= "" then headers["Content-Type"] = content_type end
  if body == "" then body = nil end
  req = wrk.format(method, path, headers, body)
end
function request() return req end
function response(status, headers, body)
  responses = responses + 1
  if status ~= expected then unexpected = unexpected + 1 end
end
function done(summary, latency, requests)
  local total_unexpected, total = 0, 0
  for _, thread in ipairs(threads) do
    total_unexpected = total_unexpected + thread:get("unexpected")
    total = total + thread:get("responses")
  end
  io.write(string.format(
    '{"requests": %d, "checked": %d, "unexpected": %d, "socket_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, total, total_unexpected,
    summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class Kind:
    name: str
    method: str
    path: str
    expected: int
    body: str = ""
    key: bool = True
    content_type: str = "application/json"
    connections: int = 10


def kinds(models: list[str]) -> list[Kind]:
    """What the clients send: valid inferences and metadata, and invalid requests (each with its 4xx)."""
    digits = json.dumps({"inputs": [{"name": "pixels", "shape": [2, 64], "datatype": "FP32", "data": [0.5] * 128}]})
    text = json.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a b c", "d e"]}]})
    wrong_shape = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 63], "datatype": "FP32", "data": [0.0] * 63}]})
    found = [
        Kind("digits infer (valid)", "POST", "/v2/models/digits/infer", 200, digits, connections=14),
        Kind("digits metadata (valid)", "GET", "/v2/models/digits", 200, content_type="", connections=6),
        Kind("wrong shape (400)", "POST", "/v2/models/digits/infer", 400, wrong_shape, connections=8),
        Kind("broken JSON (400)", "POST", "/v2/models/digits/infer", 400, '{"inputs": [', connections=6),
        Kind("no API key (403)", "POST", "/v2/models/digits/infer", 403, digits, key=False, connections=4),
        Kind("unknown route (404)", "GET", "/v9/nothing", 404, content_type="", connections=4),
    ]
    if "minilm" in models:
        found.append(Kind("minilm infer (valid)", "POST", "/v2/models/minilm/infer", 200, text, connections=8))
    return found


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _family(pid: int) -> list[int]:
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                pids.append(int(entry.name))
    return pids


@dataclass
class LoadResult:
    seconds: float
    connections: int
    per_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory_mb: list[float] = field(default_factory=list)  # server + workers, once a second

    @property
    def requests(self) -> int:
        return sum(int(k["requests"]) for k in self.per_kind.values())

    @property
    def unexpected(self) -> int:
        return sum(int(k["unexpected"]) + int(k["socket_errors"]) + int(k["timeouts"]) for k in self.per_kind.values())

    def summary(self) -> dict[str, Any]:
        third = max(1, len(self.memory_mb) // 3)
        return {
            "seconds": self.seconds,
            "connections": self.connections,
            "requests": self.requests,
            "requests_per_s": round(self.requests / self.seconds, 1),
            "unexpected": self.unexpected,
            "p99_ms_by_kind": {name: round(k["p99_us"] / 1000, 1) for name, k in self.per_kind.items()},
            "p50_ms_by_kind": {name: round(k["p50_us"] / 1000, 1) for name, k in self.per_kind.items()},
            "memory_mb_first_third": round(sum(self.memory_mb[:third]) / third, 1),
            "memory_mb_last_third": round(sum(self.memory_mb[-third:]) / third, 1),
            "memory_mb_max": round(max(self.memory_mb, default=0.0), 1),
        }


def run_load(url: str, api_key: str, server_pid: int, seconds: int, models: list[str]) -> LoadResult:
    """Every kind at once against ``url`` for ``seconds``; wrk's own timeout is 10 s per request."""
    chosen = kinds(models)
    result = LoadResult(seconds=seconds, connections=sum(k.connections for k in chosen))
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "check.lua"
        script.write_text(LUA)
        processes = []
        for kind in chosen:
            env = {
                "LOAD_EXPECTED": str(kind.expected),
                "LOAD_METHOD": kind.method,
                "LOAD_PATH": kind.path,
                "LOAD_BODY": kind.body,
                "LOAD_KEY": api_key if kind.key else "",
                "LOAD_CONTENT_TYPE": kind.content_type,
                "PATH": "/usr/bin:/bin",
            }
            command = [WRK, "-t1", f"-c{kind.connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
            processes.append((kind, subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)))
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                result.memory_mb.append(sum(_rss_mb(pid) for pid in _family(server_pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for kind, process in processes:
            out, _ = process.communicate(timeout=seconds + 60)
            line = [raw for raw in out.splitlines() if raw.startswith("{")][-1]
            result.per_kind[kind.name] = json.loads(line)
        stop.set()
        sampler.join()
    return result

"""Fresh processes that serve one first request: onnxfn's handler, the tutorial handler, the floor.

Each is a new ``python -c`` interpreter with the function's environment (see ``lambda_env``),
pinned to the function core, and reports one ``BENCH-RESULT`` JSON line: its phases (perf_counter
inside the process), the wall-clock time of the first successful response (the parent measured the
spawn, so the interpreter's start is counted), and its peak RSS (``VmHWM``: unlike ``ru_maxrss``,
not inherited from the process that spawned it).

Phases:
- onnxfn: import (``import handlers.api``: Lambda's init), fetch (the manifest, then the files
  and their sha256: the manifest fetch timed by wrapping ``ModelStore._fetch_manifest``, the rest
  from the handler's own "model loaded" log line, ``fetch_ms``), session (``session_ms`` of that
  line: session and pipeline), first inference (the rest of the first invocation).
- tutorial: import (its libraries), fetch (``download_file`` at import), session (session and
  tokenizer at import), first inference (the first ``lambda_handler`` call); split by its
  ``INIT_MARKS``.
- floor: ``import onnxruntime`` (and numpy), read the artifact bytes from local disk, create the
  session, one run on tensors loaded from an .npz (their loading is counted as "other").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import lambda_env
from benchmarks.lambda_env import RESULT_PREFIX, FreshRun, run_fresh

_PROLOGUE = (
    f"RESULT = {RESULT_PREFIX!r}\n"
    + """
import os, time
WALL0, T0 = time.time(), time.perf_counter()
import json, sys
config = json.loads(open(sys.argv[1]).read())
if config["core"] is not None:
    os.sched_setaffinity(0, {config["core"]})

def vm_hwm_mb():
    with open("/proc/self/status") as status:
        return int(next(l for l in status if l.startswith("VmHWM:")).split()[1]) / 1024
"""
)

ONNXFN = (
    _PROLOGUE
    + """
class Context:
    function_name = "onnxfn-bench"
    function_version = "$LATEST"
    memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:onnxfn-bench"
    aws_request_id = "bench-first-request"
    log_group_name = "/aws/lambda/onnxfn-bench"
    log_stream_name = "bench"
    def get_remaining_time_in_millis(self):
        return 30000

T1 = time.perf_counter()
import handlers.api as api
T2 = time.perf_counter()
manifest_ms = []
store = sys.modules.get("handlers.runtime.model_store")
if store is not None and hasattr(getattr(store, "ModelStore", None), "_fetch_manifest"):
    original = store.ModelStore._fetch_manifest
    def timed(self, _original=original):
        started = time.perf_counter()
        try:
            return _original(self)
        finally:
            manifest_ms.append((time.perf_counter() - started) * 1000)
    store.ModelStore._fetch_manifest = timed
T3 = time.perf_counter()
response = api.lambda_handler(config["event"], Context())
T4, WALL4 = time.perf_counter(), time.time()
assert response["statusCode"] == 200, response
for _ in range(config["requests"] - 1):
    assert api.lambda_handler(config["event"], Context())["statusCode"] == 200
print(RESULT + json.dumps({
    "wall_start": WALL0, "wall_response": WALL4, "import_ms": (T2 - T1) * 1000,
    "first_invoke_ms": (T4 - T3) * 1000, "manifest_fetch_ms": sum(manifest_ms), "peak_rss_mb": vm_hwm_mb(),
}))
"""
)

TUTORIAL = (
    _PROLOGUE
    + """
T1 = time.perf_counter()
import tutorial_handler as handler
marks = handler.INIT_MARKS
T3 = time.perf_counter()
response = handler.lambda_handler(config["event"], None)
T4, WALL4 = time.perf_counter(), time.time()
assert response["statusCode"] == 200, response
print(RESULT + json.dumps({
    "wall_start": WALL0, "wall_response": WALL4, "import_ms": (marks["imported"] - T1) * 1000,
    "fetch_ms": (marks["downloaded"] - marks["imported"]) * 1000,
    "session_ms": (marks["ready"] - marks["downloaded"]) * 1000,
    "first_invoke_ms": (T4 - T3) * 1000, "peak_rss_mb": vm_hwm_mb(),
}))
"""
)

FLOOR = (
    _PROLOGUE
    + """
T1 = time.perf_counter()
import numpy as np
import onnxruntime
import bare
T2 = time.perf_counter()
with open(config["model"], "rb") as artifact:
    data = artifact.read()
T3 = time.perf_counter()
session = bare.create_session(data, 1, config["preoptimized"])
T4 = time.perf_counter()
with np.load(config["feeds"]) as arrays:
    feeds = bare.feeds_for(session, dict(arrays))
T5 = time.perf_counter()
bare.run(session, feeds)
T6, WALL6 = time.perf_counter(), time.time()
print(RESULT + json.dumps({
    "wall_start": WALL0, "wall_response": WALL6, "import_ms": (T2 - T1) * 1000, "fetch_ms": (T3 - T2) * 1000,
    "session_ms": (T4 - T3) * 1000, "first_invoke_ms": (T6 - T5) * 1000, "peak_rss_mb": vm_hwm_mb(),
}))
"""
)

PHASES = ("interpreter", "import", "fetch", "session", "first inference", "other")


def _phases(run: FreshRun, fetch_ms: float | None, session_ms: float | None) -> dict[str, float]:
    """Milliseconds per phase; ``other`` is what the phases leave of spawn → first response."""
    r = run.result
    total = (r["wall_response"] - run.spawned_wall) * 1000
    first = r["first_invoke_ms"]
    phases = {
        "interpreter": (r["wall_start"] - run.spawned_wall) * 1000,
        "import": r["import_ms"],
        "fetch": fetch_ms or 0.0,
        "session": session_ms or 0.0,
    }
    if "fetch_ms" not in r:  # onnxfn: fetch and session happen inside the first invocation
        first -= phases["fetch"] + phases["session"]
    phases["first inference"] = first
    phases["other"] = total - sum(phases.values())
    return {"total": total, **phases, "peak_rss_mb": r["peak_rss_mb"]}


def onnxfn(
    env: dict[str, str], event: dict[str, Any], work: Path, core: int | None, requests: int = 1
) -> dict[str, Any]:
    """One fresh onnxfn function: init, first request (and ``requests - 1`` more); its phases."""
    config = lambda_env.write_json(work / "onnxfn.json", {"event": event, "core": core, "requests": requests})
    task = lambda_env.task_root("onnxfn", work)
    run = run_fresh(ONNXFN, {**env, "PYTHONPATH": str(task)}, [str(config)])
    loaded = next((line for line in run.logs if line.get("message") == "model loaded"), None)
    fetch = session = None
    if loaded is not None:
        fetch = run.result["manifest_fetch_ms"] + float(loaded.get("fetch_ms", 0.0))
        session = float(loaded.get("session_ms", 0.0))
    return _phases(run, fetch, session) | {"split_from_log": loaded is not None}


def tutorial(env: dict[str, str], event: dict[str, Any], work: Path, core: int | None) -> dict[str, Any]:
    config = lambda_env.write_json(work / "tutorial.json", {"event": event, "core": core})
    task = lambda_env.task_root("peers", work)
    run = run_fresh(TUTORIAL, {**env, "PYTHONPATH": str(task)}, [str(config)])
    return _phases(run, run.result["fetch_ms"], run.result["session_ms"])


def floor(model_path: Path, feeds_path: Path, preoptimized: bool, work: Path, core: int | None) -> dict[str, Any]:
    config = lambda_env.write_json(
        work / "floor.json",
        {"model": str(model_path), "feeds": str(feeds_path), "preoptimized": preoptimized, "core": core},
    )
    task = lambda_env.task_root("peers", work)
    env = {**lambda_env.host_environment(), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(task)}
    run = run_fresh(FLOOR, env, [str(config)])
    return _phases(run, run.result["fetch_ms"], run.result["session_ms"])


def importtime(
    env: dict[str, str], event: dict[str, Any], work: Path, core: int | None, top: int = 10
) -> dict[str, Any]:
    """One onnxfn cold start under ``python -X importtime``: where init goes, and the imports the
    first request makes (boto3, onnxruntime, tokenizers are imported lazily, on first use)."""
    config = lambda_env.write_json(work / "importtime.json", {"event": event, "core": core, "requests": 1})
    task = lambda_env.task_root("onnxfn", work)
    run = run_fresh(ONNXFN, {**env, "PYTHONPATH": str(task)}, [str(config)], flags=("-X", "importtime"))
    rows = []
    for line in run.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, field = line.removeprefix("import time:").split("|", 2)
        depth = (len(field) - len(field.lstrip(" ")) - 1) // 2
        rows.append((depth, field.strip(), int(self_us), int(cumulative_us)))
    # importtime prints a module when its import ends: handlers.api's children come before it.
    at = next((i for i, row in enumerate(rows) if row[1] == "handlers.api" and row[0] == 0), None)
    if at is None:
        return {}
    start = max((i for i, row in enumerate(rows[:at]) if row[0] == 0), default=-1) + 1
    children = sorted(((n, c) for d, n, _, c in rows[start:at] if d == 1), key=lambda row: -row[1])
    lazy = sorted(((n, c) for d, n, _, c in rows[at + 1 :] if d == 0), key=lambda row: -row[1])
    return {
        "command": 'python -X importtime -c "<onnxfn cold start>" (one extra fresh process)',
        "handlers_api_ms": rows[at][3] / 1000,
        "init_imports_ms": {name: us / 1000 for name, us in children[:top]},
        "first_request_imports_ms": {name: us / 1000 for name, us in lazy[:top]},
        "first_request_imports_total_ms": sum(us for _, us in lazy) / 1000,
    }

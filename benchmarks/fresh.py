"""Fresh processes that serve one first request: onnxfn's handler, the tutorial handler, the floor.

Each is a new interpreter of the function's runtime started from a :class:`benchmarks.faithful.Runtime`
(``python3.12 -I -S -B -c``, ``sys.path`` = code + layer, the function's environment; see
``benchmarks/faithful.py``). Its init (the handler's import) runs unthrottled when the init burst is
on; then it writes its pid into the CPU quota its parent created (memory / 1,769 vCPU) and serves
the first request (and, for onnxfn, a few warm ones). stdout and stderr are unbuffered, as Lambda's
runtime makes them. It reports one ``BENCH-RESULT`` JSON line: timestamps of its timeline
(``perf_counter`` inside the process, with the wall clock of its start, so the parent can place the
spawn and the arrival of each log line on it), intervals of known work, and its peak RSS (``VmHWM``).

The timeline, split into phases that add up to spawn → first response (:func:`split`):

- interpreter: spawn → the handler's import begins (the interpreter's start and the bench's own
  bootstrap: reading its config, ``json``, as Lambda's runtime bootstrap does before the handler);
- import: the handler's import (Lambda's init) without the model's fetch and session;
- fetch, session: the model's download (+ sha256) and session (+ pipeline), wherever they ran:
  inside the import (loaded at init, even on a thread of its own) or inside the first request;
- first inference: the first invocation without the model's fetch and session;
- other: what is left (between init and the first request; the floor loading its tensors).

The move into the CPU quota (a cgroup v1 migration) is the harness's work and is left out.

Where fetch and session come from:

- onnxfn: the handler's own "model loaded" log line (``fetch_ms``, ``session_ms``), ending when the
  line arrived; plus ``ModelStore._fetch_manifest`` calls made after the import, timed by wrapping
  it when it exists. Nothing else of the handlers' internals is used.
- tutorial: its ``INIT_MARKS`` (download and session at import).
- floor: ``import onnxruntime`` (and numpy), read the artifact bytes from local disk, create the
  session (its init), then one run on tensors loaded from an .npz (their loading is "other").

An onnxfn process also reports what its cold path did (``checks``, read outside the timed work):
how many of the modules it imported from the function's code and layer were read from bytecode and
how many compiled from source, whether the model store held the loaded model when the handler's
import returned, whether ``boto3`` was in ``sys.modules`` after the first response, and whether the
store took the model's bytes from the download started at init (``handlers.runtime.prefetch``): it
then never created an S3 client of its own.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import faithful, lambda_env
from benchmarks.lambda_env import RESULT_PREFIX, FreshRun, run_fresh

_PROLOGUE = (
    f"RESULT = {RESULT_PREFIX!r}\n"
    + """
import os, time
WALL0, T0 = time.time(), time.perf_counter()
import json, sys
config = json.loads(open(sys.argv[1]).read())
sys.path[:0] = config["sys_path"]

MARKS = []  # when a line holding MARK was written (the parent's reading of the pipe may lag behind)

class Unbuffered:
    # What Lambda's runtime (awslambdaric's bootstrap) does to stdout and stderr: flush every write.
    def __init__(self, stream):
        self.stream = stream
    def write(self, msg):
        if isinstance(msg, str) and config["mark"] in msg:
            MARKS.append(time.perf_counter())
        self.stream.write(msg)
        self.stream.flush()
    def writelines(self, msgs):
        self.stream.writelines(msgs)
        self.stream.flush()
    def __getattr__(self, attr):
        return getattr(self.stream, attr)

sys.stdout, sys.stderr = Unbuffered(sys.stdout), Unbuffered(sys.stderr)
QUOTA = {"joined": False, "problem": "" if config["cgroup"] else "no quota given", "join": [0.0, 0.0]}

def join_quota():
    if not config["cgroup"]:
        return
    started = time.perf_counter()
    try:
        with open(os.path.join(config["cgroup"], "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
        QUOTA["joined"] = True
    except OSError as exc:
        QUOTA["problem"] = "could not join " + config["cgroup"] + ": " + str(exc)
    QUOTA["join"] = [started, time.perf_counter()]

def init_starts():
    if not config["init_burst"]:
        join_quota()

def init_ends():
    if config["init_burst"]:
        join_quota()

def report(**values):
    with open("/proc/self/status") as status:
        hwm = int(next(l for l in status if l.startswith("VmHWM:")).split()[1]) / 1024
    values.update(t0=T0, wall0=WALL0, peak_rss_mb=hwm, quota_joined=QUOTA["joined"], quota_problem=QUOTA["problem"])
    values.update(quota_join=QUOTA["join"], marks=MARKS)
    print(RESULT + json.dumps(values))
"""
)

ONNXFN = (
    _PROLOGUE
    + """
class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    function_version = "$LATEST"
    memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:" + function_name
    log_group_name = "/aws/lambda/" + function_name
    log_stream_name = "bench"
    def __init__(self, request_id):
        self.aws_request_id = request_id
        self.deadline = time.monotonic() + config["timeout_s"]
    def get_remaining_time_in_millis(self):
        return max(0, int((self.deadline - time.monotonic()) * 1000))

T1 = time.perf_counter()
init_starts()
import handlers.api as api
T2 = time.perf_counter()
init_ends()
STORE = getattr(sys.modules.get("handlers.runtime.model_store"), "_store", None)
LOADED_AT_INIT = STORE is not None and STORE.ready
manifest = []
store = sys.modules.get("handlers.runtime.model_store")
if store is not None and hasattr(getattr(store, "ModelStore", None), "_fetch_manifest"):
    original = store.ModelStore._fetch_manifest
    def timed(self, _original=original):
        started = time.perf_counter()
        try:
            return _original(self)
        finally:
            manifest.append([started, time.perf_counter()])
    store.ModelStore._fetch_manifest = timed

def invoke(index):
    response = api.lambda_handler(config["event"], Context("bench-request-%d" % index))
    assert response["statusCode"] == 200, response

T3 = time.perf_counter()
invoke(0)
T4 = time.perf_counter()

def bytecode_use():
    # modules of the function's code and layer, and whether their bytecode was there to be read
    roots = tuple(os.path.join(path, "") for path in config["sys_path"])
    counts = {"modules_from_bytecode": 0, "modules_from_source": 0}
    for module in list(sys.modules.values()):
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None) or ""
        if origin.endswith(".py") and origin.startswith(roots):
            cached = getattr(spec, "cached", None)
            counts["modules_from_bytecode" if cached and os.path.exists(cached) else "modules_from_source"] += 1
    return counts

STORE = getattr(sys.modules.get("handlers.runtime.model_store"), "_store", None)
CHECKS = {
    "boto3_imported": "boto3" in sys.modules,  # after the first response
    "model_loaded_at_init": LOADED_AT_INIT,
    # the store took every byte from the download started at init: it never created an S3 client of its own
    "model_from_init_download": STORE is not None and STORE.ready and getattr(STORE, "_s3", True) is None,
    **bytecode_use(),
}
warm = []
for index in range(config["warm"]):
    started = time.perf_counter()
    invoke(index + 1)
    warm.append((time.perf_counter() - started) * 1000)
report(t1=T1, t2=T2, t3=T3, t4=T4, fetch=manifest, session=[], warm_ms=warm, checks=CHECKS)
"""
)

TUTORIAL = (
    _PROLOGUE
    + """
T1 = time.perf_counter()
init_starts()
import tutorial_handler as handler
T2 = time.perf_counter()
init_ends()
marks = handler.INIT_MARKS
T3 = time.perf_counter()
response = handler.lambda_handler(config["event"], None)
T4 = time.perf_counter()
assert response["statusCode"] == 200, response
report(
    t1=T1, t2=T2, t3=T3, t4=T4, warm_ms=[],
    fetch=[[marks["imported"], marks["downloaded"]]], session=[[marks["downloaded"], marks["ready"]]],
)
"""
)

FLOOR = (
    _PROLOGUE
    + """
T1 = time.perf_counter()
init_starts()
import numpy as np
import onnxruntime
import bare
R0 = time.perf_counter()
with open(config["model"], "rb") as artifact:
    data = artifact.read()
R1 = time.perf_counter()
session = bare.create_session(data, 1, config["preoptimized"])
T2 = time.perf_counter()
init_ends()
with np.load(config["feeds"]) as arrays:
    feeds = bare.feeds_for(session, dict(arrays))
T3 = time.perf_counter()
bare.run(session, feeds)
T4 = time.perf_counter()
report(t1=T1, t2=T2, t3=T3, t4=T4, warm_ms=[], fetch=[[R0, R1]], session=[[R1, T2]])
"""
)

PHASES = ("interpreter", "import", "fetch", "session", "first inference", "other")
MODEL_LOADED = "model loaded"


@dataclass(frozen=True)
class Launch:
    """How fresh processes of one case start: which runtime, memory (CPU share), init burst, bytecode."""

    runtime: faithful.Runtime
    memory_mb: int
    init_burst: bool
    work: Path
    bytecode: bool = True

    def run(self, code: str, kind: str, name: str, config: dict[str, Any], env: dict[str, str], **kw: Any) -> FreshRun:
        """One fresh process of ``code`` with its own CPU quota folder (created here, removed after)."""
        flags: tuple[str, ...] = kw.pop("flags", ())
        with faithful.cpu_quota(self.runtime, name, self.memory_mb) as cgroup:
            full = {
                "mark": f'"{MODEL_LOADED}"',
                **config,
                "sys_path": self.runtime.sys_path(kind, self.bytecode),
                "cgroup": cgroup,
                "init_burst": self.init_burst,
            }
            path = lambda_env.write_json(self.work / f"{name}.json", full)
            return run_fresh([*self.runtime.command(code, flags), str(path)], env, **kw)


def _length(intervals: list[tuple[float, float]]) -> float:
    """The time covered by ``intervals`` (overlaps counted once)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _clip(intervals: list[tuple[float, float]], low: float, high: float) -> list[tuple[float, float]]:
    return [(max(a, low), min(b, high)) for a, b in intervals if min(b, high) > max(a, low)]


def _cut(intervals: list[tuple[float, float]], cut: tuple[float, float]) -> list[tuple[float, float]]:
    """``intervals`` without the time of ``cut``."""
    out = []
    for a, b in intervals:
        out += [(a, min(b, cut[0]))] if a < cut[0] else []
        out += [(max(a, cut[1]), b)] if b > cut[1] else []
    return [(a, b) for a, b in out if b > a]


def split(run: FreshRun, fetch: list[tuple[float, float]], session: list[tuple[float, float]]) -> dict[str, Any]:
    """Milliseconds per phase of spawn → first response (they add up to ``total``), and the
    figures derived from the same timeline (all on the process's ``perf_counter`` clock).

    The process's move into its CPU quota (a cgroup v1 migration, 10-15 ms here) is the harness's
    work, not Lambda's: it is left out of every phase and of the total (``quota_join_ms``).
    """
    r = run.result
    spawn = r["t0"] - (r["wall0"] - run.spawned_wall)
    t1, t2, t3, t4 = r["t1"], r["t2"], r["t3"], r["t4"]
    join = (r["quota_join"][0], r["quota_join"][1])
    fetch = _cut(_clip(fetch, t1, t4), join)
    session = _cut(_clip(session, t1, t4), join)
    model = fetch + session
    session_only = _length(model) - _length(fetch)  # session where it does not overlap a fetch
    init_model = _length(_clip(model, t1, t2))
    first_model = _length(_clip(model, t3, t4))
    join_in_init = _length(_clip([join], t1, t2))
    phases = {
        "interpreter": (t1 - spawn) * 1000,  # the interpreter's start and the runtime's bootstrap
        "import": (t2 - t1 - init_model - join_in_init) * 1000,
        "fetch": _length(fetch) * 1000,
        "session": session_only * 1000,
        "first inference": (t4 - t3 - first_model) * 1000,
    }
    join_s = join[1] - join[0]
    total = (t4 - spawn - join_s) * 1000
    phases["other"] = total - sum(phases.values())
    return {
        "total": total,
        **phases,
        # the handler's import: Lambda's init, the model included when it loads there
        "init_ms": (t2 - t1 - join_in_init) * 1000,
        "model_in_init_ms": init_model * 1000,
        "model_in_first_request_ms": first_model * 1000,
        "first_request_ms": (t4 - t3) * 1000,  # the first invocation, what the function's timeout limits
        "warm_ms": statistics.median(r["warm_ms"]) if r["warm_ms"] else None,
        "peak_rss_mb": r["peak_rss_mb"],
        "cpu_enforced": bool(r["quota_joined"]),
        "cpu_problem": r["quota_problem"],
        "quota_join_ms": join_s * 1000,
    }


def _model_loaded(run: FreshRun) -> tuple[list[tuple[float, float]], list[tuple[float, float]]] | None:
    """The fetch and session intervals of onnxfn's "model loaded" log line, on the process's clock:
    they end when the line was written (as the load ends): the process's own stamp of that write
    when it went through ``sys.stdout``/``sys.stderr``, else when the line reached this process."""
    r = run.result
    for line, wall in zip(run.logs, run.log_walls, strict=True):
        if line.get("message") != MODEL_LOADED:
            continue
        end = r["marks"][0] if r["marks"] else r["t0"] + (wall - r["wall0"])
        session_s = float(line.get("session_ms", 0.0)) / 1000
        fetch_s = float(line.get("fetch_ms", 0.0)) / 1000
        return [(end - session_s - fetch_s, end - session_s)], [(end - session_s, end)]
    return None


def onnxfn(
    launch: Launch, env: dict[str, str], event: dict[str, Any], timeout_s: int, warm: int = 0, name: str = "onnxfn"
) -> dict[str, Any]:
    """One fresh onnxfn function: init, the first request and ``warm`` more; its phases."""
    config = {"event": event, "timeout_s": timeout_s, "warm": warm}
    run = launch.run(ONNXFN, "onnxfn", name, config, env)
    return _onnxfn_split(run)


def _onnxfn_split(run: FreshRun) -> dict[str, Any]:
    manifest = [(a, b) for a, b in run.result["fetch"]]
    loaded = _model_loaded(run)
    fetch, session = loaded if loaded else ([], [])
    checks = run.result.get("checks", {})
    return split(run, manifest + fetch, session) | {"split_from_log": loaded is not None, "checks": checks}


def tutorial(launch: Launch, env: dict[str, str], event: dict[str, Any], name: str = "tutorial") -> dict[str, Any]:
    run = launch.run(TUTORIAL, "peers", name, {"event": event}, env)
    return split(run, [tuple(i) for i in run.result["fetch"]], [tuple(i) for i in run.result["session"]])


def floor(
    launch: Launch, model_path: Path, feeds_path: Path, preoptimized: bool, env: dict[str, str]
) -> dict[str, Any]:
    config = {"model": str(model_path), "feeds": str(feeds_path), "preoptimized": preoptimized}
    run = launch.run(FLOOR, "peers", "floor", config, env)
    return split(run, [tuple(i) for i in run.result["fetch"]], [tuple(i) for i in run.result["session"]])


def importtime(
    launch: Launch, env: dict[str, str], event: dict[str, Any], timeout_s: int, top: int = 10
) -> dict[str, Any]:
    """One onnxfn cold start under ``-X importtime``: where init goes, and what the first request
    imports (whatever the handler leaves for first use)."""
    config = {"event": event, "timeout_s": timeout_s, "warm": 0}
    run = launch.run(ONNXFN, "onnxfn", "importtime", config, env, flags=("-X", "importtime"))
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
        "command": f"{launch.runtime.runtime} -I -S -B -X importtime -c '<onnxfn cold start>' (one extra process)",
        "handlers_api_ms": rows[at][3] / 1000,
        "init_imports_ms": {name: us / 1000 for name, us in children[:top]},
        "first_request_imports_ms": {name: us / 1000 for name, us in lazy[:top]},
        "first_request_imports_total_ms": sum(us for _, us in lazy) / 1000,
    }

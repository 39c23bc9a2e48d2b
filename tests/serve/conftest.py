"""``onnxfn serve`` as a real subprocess, driven over HTTP and through the embedded AWS.

``real_assembly`` is the project's app synthesized by the pinned CDK CLI into a temporary folder
(once per session); ``start_serve`` runs ``onnxfn serve`` on it (or on any assembly) with a free
port and a private state file, waits until the state file says it is ready, and on exit stops it
with SIGINT (as Ctrl-C does) and checks that it exited cleanly and left no worker process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from onnxfn.local.client import AppClient

ROOT = Path(__file__).resolve().parents[2]
ONNXFN = Path(sys.executable).parent / "onnxfn"
START_TIMEOUT_S = 90


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Served:
    process: subprocess.Popen[str]
    state: dict[str, Any]
    state_file: Path
    log_file: Path
    client: AppClient
    seen_workers: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return str(self.state["url"])

    @property
    def host_port(self) -> str:
        return self.url.removeprefix("http://")

    def workers(self) -> list[int]:
        pids = children_of(self.process.pid)
        self.seen_workers.update(pids)
        return pids

    def output(self) -> str:
        return self.log_file.read_text(errors="replace")


@pytest.fixture(scope="session")
def real_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's app, synthesized by the pinned CDK CLI (what `cdk deploy` would deploy)."""
    from onnxfn.local.synth import synthesize

    out = tmp_path_factory.mktemp("assembly") / "cdk.out"
    synthesize(ROOT, out)
    return out


@contextmanager
def _serve(app_dir: Path, tmp: Path, args: list[str]) -> Iterator[Served]:
    state_file = tmp / "serve.json"
    log_file = tmp / "serve.log"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    command = [str(ONNXFN), "serve", "--port", "0", "--app", str(app_dir), "--synth", "never"]
    command += ["--state-file", str(state_file), *args]
    with log_file.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not state_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"onnxfn serve did not start (exit {process.returncode}):\n{log_file.read_text()}")
        time.sleep(0.1)
    state = json.loads(state_file.read_text())
    served = Served(process, state, state_file, log_file, AppClient(state))
    try:
        yield served
    finally:
        served.client.close()
        served.workers()
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"onnxfn serve did not stop on SIGINT:\n{served.output()[-3000:]}")
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in served.seen_workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in served.seen_workers if alive(pid)]
        assert code == 0, served.output()[-3000:]
        assert not left, f"worker processes left after stop: {left}"
        quotas = list(Path("/sys/fs/cgroup/cpu/onnxfn").glob(f"{process.pid}-*"))
        assert not quotas, f"CPU quota folders left after stop: {quotas}"
        assert not state_file.exists(), "the state file outlived the server"


StartServe = Callable[..., Any]


@pytest.fixture
def start_serve(tmp_path: Path) -> StartServe:
    """``with start_serve(app_dir, *args) as served:`` — one server for one test."""

    def start(app_dir: Path, *args: str) -> Any:
        return _serve(app_dir, tmp_path, list(args))

    return start


@pytest.fixture(scope="session")
def served_app(real_assembly: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server of the real app shared by read-only tests (retries after 1 s: redrive is quick)."""
    tmp = tmp_path_factory.mktemp("served")
    with _serve(real_assembly, tmp, ["--api-key", "test-key", "--retry-after", "1"]) as served:
        yield served

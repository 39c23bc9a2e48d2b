"""The function as Lambda runs it, for the benchmarks: interpreter, code, layer and CPU share.

Every cold-start figure the suite publishes comes from processes started from a :class:`Runtime`:

- the interpreter of the function's runtime (``python3.12`` for the demo models), found by
  ``layers/interpreters.py`` through ``onnxfn.local.runtime.interpreters()``, run as
  ``python3.12 -I -S -B``: no ``PYTHON*`` variables, no site-packages of its own, nothing from
  ``.venv``, no bytecode written (Lambda's ``/var/task`` and ``/opt`` are read-only);
- ``sys.path`` = the staged function code (``stacks.assets.stage_handlers``, compiled by that
  interpreter, Lambda's ``/var/task``), then the layer built by ``layers/build.py`` (compiled too,
  ``/opt``) in Lambda's order (``onnxfn.local.runtime.layer_paths``);
- the handler's import (init) unthrottled, as Lambda's init CPU burst (a setting, default on), then
  the process moves itself into a cgroup v1 CPU quota of memory / 1,769 vCPU (``CpuQuota``, created
  and removed by the parent) before its first invocation. Where cgroup quotas cannot be set, every
  figure says "NOT enforced".

The peers run the same way: the tutorial handler and the floor from ``benchmarks/peers/`` (compiled
by the same interpreter) with the same layer; the tutorial once more with neither its code nor the
layer compiled (a copy of the layer without ``__pycache__``), as a tutorial deploys it. onnxfn's
handlers have such a copy too (``plain_code_dir``), for the cold start as it shipped before bytecode
(``cold_start_changes.py``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.timing import ROOT

PEERS = ROOT / "benchmarks" / "peers"
PEER_FILES = ("tutorial_handler.py", "bare.py")


@dataclass(frozen=True)
class FunctionConfig:
    """What ``cdk.json`` deploys for one model: the settings a faithful run needs."""

    model: str
    runtime: str  # python3.12
    architecture: str
    memory_mb: int
    timeout_s: int
    load_mode: str  # what the stack puts in LOAD_MODE (lazy / eager)


def function_configs() -> dict[str, FunctionConfig]:
    """Every model's function settings, as the stack reads them (``stacks.config.load_config``)."""
    from stacks.config import load_config

    context = json.loads((ROOT / "cdk.json").read_text())["context"].get("onnxfn")
    config = load_config(context, ROOT)
    return {
        m.name: FunctionConfig(
            model=m.name,
            runtime=m.settings.runtime,
            architecture=m.settings.architecture,
            memory_mb=m.settings.memory_mb,
            timeout_s=m.settings.timeout_s,
            load_mode=m.load_mode,
        )
        for m in config.models
    }


@dataclass(frozen=True)
class Runtime:
    """One Lambda Python runtime on this machine: where its interpreter, code and layer are."""

    runtime: str  # python3.12
    python: str  # the interpreter's path
    version: str  # its full version, 3.12.1
    code_dir: Path  # staged handlers/, compiled (Lambda's /var/task)
    layer_dir: Path  # the built layer, compiled (Lambda's /opt)
    peers_dir: Path  # the tutorial handler and the floor, compiled
    plain_layer_dir: Path | None  # the same layer without bytecode
    plain_code_dir: Path | None  # the same staged handlers without bytecode
    plain_peers_dir: Path | None  # the peers without bytecode
    cpu_problem: str  # "" when the CPU share is enforced (cgroup v1 quota), else why not
    init_burst: bool  # init unthrottled (Lambda's init CPU burst); False: init at the memory's share too

    @property
    def cpu_enforced(self) -> bool:
        return not self.cpu_problem

    def command(self, code: str, flags: tuple[str, ...] = ()) -> list[str]:
        """``python3.12 -I -S -B [flags] -c code``: isolated, no site-packages, no bytecode written."""
        return [self.python, "-I", "-S", "-B", *flags, "-c", code]

    def sys_path(self, kind: str, bytecode: bool = True) -> list[str]:
        """Lambda's order: the function code, then the layer (``python/lib/python3.X/site-packages``, ``python``)."""
        from onnxfn.local.runtime import layer_paths

        code = self.function_dir(kind, bytecode)
        layer = self.layer_dir if bytecode else _required(self.plain_layer_dir)
        return [str(code), *layer_paths(layer, self.runtime.removeprefix("python"))]

    def function_dir(self, kind: str, bytecode: bool = True) -> Path:
        """The function's code folder (Lambda's ``/var/task``): onnxfn's staged handlers or the peers."""
        if kind == "onnxfn":
            return self.code_dir if bytecode else _required(self.plain_code_dir)
        return self.peers_dir if bytecode else _required(self.plain_peers_dir)

    def cpu_label(self, memory_mb: int) -> str:
        """The CPU a function of ``memory_mb`` gets here, in words."""
        from onnxfn.local.runtime import vcpus

        share = f"{vcpus(memory_mb):.2f} vCPU"
        if not self.cpu_enforced:
            return f"{share} NOT enforced ({self.cpu_problem})"
        burst = "init unthrottled (init burst)" if self.init_burst else "init at the same share (no init burst)"
        return f"{share} (cgroup v1 quota), {burst}"

    def describe(self) -> dict[str, Any]:
        """What a report says about how the functions ran."""
        return {
            "runtime": self.runtime,
            "interpreter": self.python,
            "python": self.version,
            "flags": "-I -S -B",
            "code": str(self.code_dir.relative_to(ROOT) if self.code_dir.is_relative_to(ROOT) else self.code_dir),
            "layer": str(self.layer_dir.relative_to(ROOT) if self.layer_dir.is_relative_to(ROOT) else self.layer_dir),
            "cpu_share_enforced": self.cpu_enforced,
            "cpu_share_problem": self.cpu_problem,
            "init_burst": self.init_burst,
        }


def _required(path: Path | None) -> Path:
    if path is None:
        raise ValueError("this runtime was prepared without the uncompiled copies (plain=False)")
    return path


def prepare(runtime: str, work: Path, init_burst: bool = True, plain: bool = True) -> Runtime:
    """Find the interpreter, build (or reuse) the layer, stage the code; RuntimeUnavailable when
    the runtime's interpreter is not on this machine (the message says how to get it)."""
    from onnxfn.local.runtime import RuntimeUnavailable, cgroup_support, host_layer, interpreters
    from stacks.assets import stage_handlers

    version = runtime.removeprefix("python")
    finder = interpreters()
    try:
        interpreter = finder.find(version)
    except finder.InterpreterNotFound as exc:
        raise RuntimeUnavailable(f"{runtime}: {exc}") from exc
    layer_dir = host_layer(runtime)
    code_dir = stage_handlers(ROOT, version)
    peers_dir = _stage_peers(work / f"peers-{runtime}", interpreter)
    plain_layer = plain_peers = plain_code = None
    if plain:
        plain_layer = work / f"layer-{runtime}-no-bytecode"
        plain_code = work / f"handlers-{runtime}-no-bytecode"
        for source, copy in ((layer_dir, plain_layer), (code_dir, plain_code)):
            if not copy.exists():
                shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
        plain_peers = _stage_peers(work / f"peers-{runtime}-no-bytecode", None)
    return Runtime(
        runtime=runtime,
        python=interpreter.path,
        version=interpreter.version,
        code_dir=code_dir,
        layer_dir=layer_dir,
        peers_dir=peers_dir,
        plain_layer_dir=plain_layer,
        plain_code_dir=plain_code,
        plain_peers_dir=plain_peers,
        cpu_problem=cgroup_support(),
        init_burst=init_burst,
    )


def _stage_peers(target: Path, interpreter: Any) -> Path:
    """The peers' code as a function folder; compiled by ``interpreter`` unless it is None."""
    from onnxfn.local.runtime import interpreters

    if not target.exists():
        target.mkdir(parents=True)
        for name in PEER_FILES:
            shutil.copyfile(PEERS / name, target / name)
        if interpreter is not None:
            interpreters().compile_tree(interpreter, target)
    return target


@contextlib.contextmanager
def cpu_quota(runtime: Runtime, name: str, memory_mb: int) -> Iterator[str]:
    """A cgroup v1 CPU quota folder of ``memory_mb``'s share for one process ("" when not enforced);
    removed afterwards."""
    if not runtime.cpu_enforced:
        yield ""
        return
    from onnxfn.local.runtime import CpuQuota, vcpus

    quota = CpuQuota(name, vcpus(memory_mb))
    try:
        yield str(quota.path)
    finally:
        quota.close()

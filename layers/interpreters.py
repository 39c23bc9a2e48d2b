"""The interpreters of Lambda's Python runtimes on this machine: found once, used by everything.

A function deployed on ``python3.12`` runs CPython 3.12; its layer's bytecode must be compiled by a
3.12 interpreter (the bytecode format is fixed per minor version, and the same on every
architecture), and a faithful local run must import the layer with 3.12. This module finds that
interpreter and compiles with it; ``layers/build.py``, the stack's asset staging and the local
runtime (``onnxfn.local.runtime``) all use it.

Where an interpreter is looked for, in order:

1. given explicitly (``--python``, or ``ONNXFN_PYTHON_3_12`` / ``ONNXFN_PYTHON_3_13``);
2. ``python3.12`` on ``PATH``;
3. pyenv's versions (``$PYENV_ROOT`` or ``~/.pyenv``), newest patch release first;
4. ``uv python find 3.12`` when uv is installed.

Standard library only, loaded by path (it is not part of an installed package).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Lambda's Python runtimes this project deploys.
RUNTIME_VERSIONS = ("3.12", "3.13")
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


class InterpreterNotFound(Exception):
    """No interpreter of the asked version was found; the message says where it looked and how to get one."""


@dataclass(frozen=True)
class Interpreter:
    """One CPython interpreter: its path, its full version and how it was found."""

    path: str
    version: str  # "3.12.1"
    source: str  # "given" | "PATH" | "pyenv" | "uv"

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def env_variable(version: str) -> str:
    """The variable that names the interpreter of ``version``: ``ONNXFN_PYTHON_3_12``."""
    return "ONNXFN_PYTHON_" + version.replace(".", "_")


def normalize(version: str) -> str:
    """``3.12`` from ``3.12``, ``python3.12`` or ``3.12.1``."""
    match = _VERSION.match(version.strip().removeprefix("python"))
    if not match:
        raise ValueError(f"expected a Python version such as 3.12 or python3.12, got {version!r}")
    return f"{match.group(1)}.{match.group(2)}"


def probe(path: str) -> str | None:
    """The full version an interpreter reports, or None when it does not run."""
    try:
        result = subprocess.run(
            [path, "-I", "-S", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 and _VERSION.match(result.stdout.strip()) else None


def _pyenv_roots() -> list[Path]:
    """``$PYENV_ROOT``, else ``~/.pyenv`` of ``$HOME`` and of the user's own home (HOME may be a
    scratch folder, as in a sandboxed synth)."""
    if os.environ.get("PYENV_ROOT"):
        return [Path(os.environ["PYENV_ROOT"])]
    homes = [Path.home()]
    with contextlib.suppress(KeyError):
        homes.append(Path(pwd.getpwuid(os.getuid()).pw_dir))
    return list(dict.fromkeys(home / ".pyenv" for home in homes))


def _pyenv_candidates(version: str) -> list[str]:
    found = []
    entries = [
        entry for root in _pyenv_roots() if (root / "versions").is_dir() for entry in (root / "versions").iterdir()
    ]
    for entry in entries:
        match = _VERSION.match(entry.name)
        if match and f"{match.group(1)}.{match.group(2)}" == version and entry.name.replace(".", "").isdigit():
            found.append((int(match.group(3) or 0), str(entry / "bin" / f"python{version}")))
    return [path for _, path in sorted(found, reverse=True)]


def _uv_candidate(version: str) -> list[str]:
    uv = shutil.which("uv")
    if not uv:
        return []
    try:
        result = subprocess.run(
            [uv, "python", "find", "--no-python-downloads", version],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    path = result.stdout.strip().splitlines()[-1] if result.returncode == 0 and result.stdout.strip() else ""
    return [path] if path else []


def find(version: str, given: str | None = None) -> Interpreter:
    """The interpreter of Lambda's ``python<version>`` runtime, or InterpreterNotFound saying how to get it."""
    version = normalize(version)
    given = given or os.environ.get(env_variable(version)) or None
    if given:
        path = shutil.which(given) or given
        full = probe(path)
        if full is None or normalize(full) != version:
            got = f"Python {full}" if full else "nothing that runs"
            raise InterpreterNotFound(f"{given}: expected a Python {version} interpreter, found {got}")
        return Interpreter(os.path.abspath(path), full, "given")
    searched: list[tuple[str, list[str]]] = [
        ("PATH", [p for p in [shutil.which(f"python{version}")] if p]),
        ("pyenv", _pyenv_candidates(version)),
        ("uv", _uv_candidate(version)),
    ]
    for source, paths in searched:
        for path in paths:
            full = probe(path)
            if full is not None and normalize(full) == version:
                return Interpreter(path, full, source)
    raise InterpreterNotFound(
        f"no Python {version} interpreter found (looked for python{version} on PATH, in pyenv's versions and "
        f"through `uv python find`). Lambda's python{version} runtime runs CPython {version}; get one with "
        f"`uv python install {version}` or `pyenv install {version}`, or name one with --python or "
        f"{env_variable(version)}=/path/to/python{version}"
    )


def compile_tree(interpreter: Interpreter, path: Path) -> None:
    """Compile every ``.py`` under ``path`` with ``interpreter`` into ``__pycache__`` beside it.

    ``unchecked-hash`` bytecode is used without looking at the source's timestamp: Lambda unpacks
    code and layers with timestamps of its own and cannot write a fresh ``.pyc`` into the read-only
    /opt and /var/task, so timestamp-checked bytecode would be recompiled at every cold start.
    Files that do not compile for the target (a package's Python 2 example, say) are skipped, as
    pip skips them.
    """
    command = [interpreter.path, "-I", "-S", "-m", "compileall", "-q", "-q", "-j", "0"]
    command += ["--invalidation-mode", "unchecked-hash", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    # compileall exits 1 when a file failed to compile; that file simply runs from source.
    if result.returncode not in (0, 1):
        raise RuntimeError(f"compiling {path} with Python {interpreter.version} failed:\n{result.stderr[-2000:]}")


if __name__ == "__main__":  # python layers/interpreters.py 3.12  → the path, or the reason on stderr
    try:
        print(find(sys.argv[1] if len(sys.argv) > 1 else "3.12").path)
    except (InterpreterNotFound, ValueError) as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)

"""What the functions are made of, prepared at synth time: the handlers asset, the dependency layer
(built by ``layers/build.py``, by path) and the container-image build context. Also the 250 MB
budget of a zip function with its layers."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from contract.limits import MB, ZIP_LIMIT_BYTES

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache")


class BudgetExceeded(ValueError):
    """Function code plus layers would not fit Lambda's unzipped size limit."""


@dataclass(frozen=True)
class Layer:
    path: Path
    hash: str
    bytes: int
    arch: str
    python_version: str


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _tree_hash(root: Path, paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        for item in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(item.relative_to(root)).encode())
            digest.update(item.read_bytes())
    return digest.hexdigest()[:16]


# The packages every function ships: the handlers and the contract they share with the stacks.
FUNCTION_PACKAGES = ("handlers", "contract")


def stage_handlers(root: Path, python_version: str) -> Path:
    """A folder holding only ``handlers/`` and ``contract/``: the zip functions' code asset for one
    Python runtime.

    The copy is compiled by that runtime's interpreter (``layers/build.py --compile``): Lambda's
    /var/task is read-only, so bytecode not shipped is recompiled at every cold start. Without the
    interpreter the code is staged as source, with a warning on stderr.
    """
    digest = _tree_hash(root, [*(root / name for name in FUNCTION_PACKAGES), root / "layers" / "interpreters.py"])
    target = root / ".cache" / "assets" / f"handlers-py{python_version}-{digest}"
    if not target.exists():
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        for name in FUNCTION_PACKAGES:
            shutil.copytree(root / name, staging / name, ignore=_IGNORED)
        command = [sys.executable, str(root / "layers" / "build.py"), "--python-version", python_version]
        result = subprocess.run([*command, "--compile", str(staging)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"compiling handlers/ for Python {python_version} failed:\n{result.stderr[-2000:]}")
        sys.stderr.write(result.stderr)
        staging.rename(target)
    return target


def stage_image_context(root: Path, extra: tuple[str, ...] = ()) -> Path:
    """The container image's build context: the same requirements, Dockerfile, handlers and contract,
    and ``layers/requirements-extra.txt`` holding what the models' pipelines need besides (``extra``)."""
    listed = "".join(f"{line}\n" for line in sorted(set(extra)))
    digest = _tree_hash(root, [*(root / name for name in FUNCTION_PACKAGES), root / "layers"])
    digest = hashlib.sha256(f"{digest}\n{listed}".encode()).hexdigest()[:16]
    target = root / ".cache" / "assets" / f"image-{digest}"
    if not target.exists():
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        for name in FUNCTION_PACKAGES:
            shutil.copytree(root / name, staging / name, ignore=_IGNORED)
        (staging / "layers").mkdir(parents=True)
        for name in ("requirements.txt", "Dockerfile"):
            shutil.copyfile(root / "layers" / name, staging / "layers" / name)
        (staging / "layers" / "requirements-extra.txt").write_text("# the models' pipeline packages\n" + listed)
        staging.rename(target)
    return target


def requirements_file(root: Path, requirements: tuple[str, ...]) -> Path:
    """A pip requirements file of ``requirements`` under ``.cache/requirements``, named by its content."""
    text = "".join(f"{line}\n" for line in sorted(requirements))
    path = root / ".cache" / "requirements" / f"{hashlib.sha256(text.encode()).hexdigest()[:12]}.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_suffix(".tmp")
        staged.write_text(text)
        staged.rename(path)
    return path


def build_layer(root: Path, python_version: str, arch: str, requirements: Path | None = None) -> Layer:
    """Run ``layers/build.py`` (cached by a hash of the requirements) and describe its output; without
    ``requirements``, the function layer of ``layers/requirements.txt``."""
    command = [
        sys.executable,
        str(root / "layers" / "build.py"),
        "--python-version",
        python_version,
        "--arch",
        arch,
        "--print-json",
    ]
    if requirements is not None:
        command += ["--requirements", str(requirements)]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"layer build for Python {python_version} {arch} failed:\n{result.stderr.strip()[-2000:]}")
    info = json.loads(result.stdout.strip().splitlines()[-1])
    if info.get("lambda_compatible") is False:
        raise RuntimeError(
            f"the layer for Python {python_version} {arch} needs glibc {info.get('requires_glibc')}, "
            "newer than that Lambda runtime's; use python3.12 or later"
        )
    return Layer(
        path=Path(info["path"]),
        hash=str(info["hash"]),
        bytes=int(info["bytes"]),
        arch=arch,
        python_version=python_version,
    )


def check_budget(function: str, code_bytes: int, layers: list[Layer]) -> str:
    """Fail when code + layers exceed 250 MB unzipped; otherwise describe the budget used."""
    used = code_bytes + sum(layer.bytes for layer in layers)
    line = (
        f"{function}: {used / MB:.1f} MB of {ZIP_LIMIT_BYTES / MB:.0f} MB unzipped "
        f"(code {code_bytes / MB:.2f} MB + layers {sum(layer.bytes for layer in layers) / MB:.1f} MB)"
    )
    if used > ZIP_LIMIT_BYTES:
        raise BudgetExceeded(f"{line}: over Lambda's limit; use packaging 'image' or trim layers/requirements.txt")
    return line

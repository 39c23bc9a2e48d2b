"""What a layer is stripped of, and how big a folder is: the rules ``layers/build.py`` applies.

Every rule removes something that never runs in Lambda; each is listed with its reason, and the
rules (with ``STRIP_RULES_VERSION``) are part of a layer's cache key. Standard library only, loaded
by ``build.py`` as a sibling module.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The hub client and what only it pulls in (tokenizers' dependencies); see "hub-clients" below.
_HUB_CLIENTS = [
    *("huggingface_hub", "hf_xet", "yaml", "_yaml", "PyYAML", "fsspec", "filelock", "tqdm"),
    *("httpx2", "httpcore2", "anyio", "h11", "click", "shellingham", "typer", "rich", "markdown_it", "mdurl"),
    "pygments",
]

# Bump when the strip logic changes in a way the rules below do not show; either changes the hash.
STRIP_RULES_VERSION = 4
STRIP_RULES: dict[str, Any] = {
    # Whatever bytecode the wheels carry goes; the layer is then compiled by the runtime's own
    # interpreter (see compile_layer), since /opt is read-only in Lambda and nothing can be cached there.
    "bytecode": {"dirs": ["__pycache__"], "suffixes": [".pyc", ".pyo"]},
    # Test suites shipped inside packages (numpy's alone is ~7 MB); only folders holding Python code,
    # so a data folder that happens to be called "test" stays.
    "tests": {"dirs": ["tests", "test"]},
    # Type stubs are for type checkers, never imported.
    "stubs": {"suffixes": [".pyi"], "top_level_dir_suffix": "-stubs"},
    # Console scripts, with the build machine's interpreter in their shebangs.
    "scripts": {"paths": ["bin"]},
    # onnxruntime's model tooling (offline optimizers, quantization, the ONNX backend API) needs the
    # onnx package, which the layer does not carry; CPU inference never imports it.
    "onnxruntime-tooling": {
        "paths": ["onnxruntime/tools", "onnxruntime/transformers", "onnxruntime/quantization", "onnxruntime/backend"]
    },
    # The C API library (28 MB) is for programs linking onnxruntime from C; the Python binding is
    # self-contained (its only NEEDED libraries are libc, libstdc++ and friends).
    "onnxruntime-c-api": {"globs": ["onnxruntime/capi/libonnxruntime.so*"]},
    # tokenizers depends on huggingface_hub for Tokenizer.from_pretrained(); the handlers read
    # tokenizer.json from the verified artifact and never reach a hub. These are the hub client and
    # what only it uses (22 MB with hf_xet).
    "hub-clients": {"packages": _HUB_CLIENTS},
    # botocore ships the API models of every AWS service (27 MB); the functions call S3 and SQS,
    # the batch function starts its state machine (Step Functions), and STS is for credentials.
    # A handler that calls another service needs it added here.
    "botocore-services": {"keep_only": {"botocore/data": ["s3", "sqs", "stepfunctions", "sts"]}},
}


@dataclass(frozen=True)
class DirectorySize:
    """Unzipped size of a directory tree: what Lambda counts against its limits."""

    bytes: int
    files: int


def measure(path: Path) -> DirectorySize:
    """Unzipped bytes and file count of a directory tree (symlinks to files count as their target)."""
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    total = files = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            total += os.stat(os.path.join(dirpath, name)).st_size
            files += 1
    return DirectorySize(total, files)


def _tree_size(path: Path) -> DirectorySize:
    return measure(path) if path.is_dir() else DirectorySize(path.stat().st_size, 1)


def _dir_rule(python_dir: Path, directory: Path) -> str | None:
    """The strip rule that removes this directory, if any."""
    relative = directory.relative_to(python_dir).as_posix()
    name = directory.name
    for rule, spec in STRIP_RULES.items():
        if relative in spec.get("paths", ()):
            return rule
        if name in spec.get("dirs", ()) and (rule != "tests" or any(directory.rglob("*.py"))):
            return rule
        suffix = spec.get("top_level_dir_suffix")
        if suffix and directory.parent == python_dir and name.endswith(suffix):
            return rule
    return None


def _file_rule(name: str) -> str | None:
    for rule, spec in STRIP_RULES.items():
        if name.endswith(tuple(spec.get("suffixes", ()))):
            return rule
    return None


def _distribution(name: str) -> str:
    """A distribution or import name normalized for comparison (PEP 503, and ``-`` vs ``_``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _targeted(python_dir: Path) -> list[tuple[str, Path]]:
    """Paths the package, glob and keep-only rules remove: (rule, path)."""
    found: list[tuple[str, Path]] = []
    for rule, spec in STRIP_RULES.items():
        packages = {_distribution(name) for name in spec.get("packages", ())}
        if packages:
            for entry in python_dir.iterdir():
                base = entry.name.split("-")[0] if entry.name.endswith(".dist-info") else entry.name.removesuffix(".py")
                if _distribution(base) in packages:
                    found.append((rule, entry))
        for pattern in spec.get("globs", ()):
            found.extend((rule, path) for path in python_dir.glob(pattern))
        for folder, keep in spec.get("keep_only", {}).items():
            root = python_dir / folder
            if root.is_dir():
                found.extend((rule, path) for path in root.iterdir() if path.is_dir() and path.name not in keep)
    return found


def strip(python_dir: Path) -> dict[str, DirectorySize]:
    """Remove what never runs in Lambda (see STRIP_RULES); return what each rule removed."""
    removed: dict[str, list[int]] = {rule: [0, 0] for rule in STRIP_RULES}

    def account(rule: str, size: DirectorySize) -> None:
        removed[rule][0] += size.bytes
        removed[rule][1] += size.files

    for rule, path in _targeted(python_dir):
        if not path.exists():
            continue
        account(rule, _tree_size(path))
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for dirpath, dirnames, filenames in os.walk(python_dir):
        here = Path(dirpath)
        for name in list(dirnames):
            if name.endswith(".dist-info"):  # metadata stays whole: packages read their own version
                dirnames.remove(name)
                continue
            dir_rule = _dir_rule(python_dir, here / name)
            if dir_rule:
                account(dir_rule, _tree_size(here / name))
                shutil.rmtree(here / name)
                dirnames.remove(name)
        for name in filenames:
            file_rule = _file_rule(name)
            if file_rule:
                account(file_rule, _tree_size(here / name))
                (here / name).unlink()
    for dirpath, _, _ in sorted(os.walk(python_dir), key=lambda entry: -len(entry[0])):
        if Path(dirpath) != python_dir and not os.listdir(dirpath):
            os.rmdir(dirpath)
    return {rule: DirectorySize(size[0], size[1]) for rule, size in removed.items()}

"""What a zip function is made of, per architecture, against Lambda's 250 MB unzipped limit.

The dependency layer comes from ``layers/build.py --print-json`` (Python 3.12, x86_64 and arm64;
cached under ``.cache/layers``, built from wheels when the requirements changed), the function code
is the handlers asset as the stack stages it (``stacks/assets.py``). MB = 2²⁰ bytes, as build.py and
the stack's budget report count them. The biggest top-level entries of each layer show where its
size goes.

The layer's own figure (and its target) is the stripped packages without bytecode: the bytecode
``layers/build.py`` compiles into the layer (recorded in its marker, ``onnxfn-layer.json``) is
reported beside it, and the zip function (layer and handlers, bytecode included) against 250 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.records import Record, StepResult
from benchmarks.timing import ROOT

MB = 1024 * 1024
LIMIT_MB = 250
ARCHITECTURES = ("x86_64", "arm64")
PYTHON = "3.12"
MARKER = "onnxfn-layer.json"  # layers/build.py's record of a built layer, in its folder
PACKAGES_METRIC = "unzipped size, packages without bytecode"


def tree_bytes(path: Path) -> int:
    return sum(os.stat(os.path.join(d, f)).st_size for d, _, files in os.walk(path) for f in files)


def _build(arch: str) -> tuple[dict[str, object], float]:
    command = [sys.executable, str(ROOT / "layers" / "build.py"), "--python-version", PYTHON, "--arch", arch]
    started = time.perf_counter()
    completed = subprocess.run([*command, "--print-json"], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"layers/build.py failed for {arch}: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def _top_entries(python_dir: Path, top: int = 8) -> dict[str, float]:
    """MB per top-level package of the layer (``*.dist-info`` metadata summed apart)."""
    sizes: dict[str, int] = {}
    for entry in python_dir.iterdir():
        name = "*.dist-info (metadata)" if entry.name.endswith(".dist-info") else entry.name
        size = tree_bytes(entry) if entry.is_dir() else entry.stat().st_size
        sizes[name] = sizes.get(name, 0) + size
    ordered = sorted(sizes.items(), key=lambda item: -item[1])
    return {name: size / MB for name, size in ordered[:top]}


def _handlers_asset() -> Path:
    sys.path.insert(0, str(ROOT))
    from stacks.assets import stage_handlers

    return stage_handlers(ROOT, PYTHON)


def layer_bytecode_bytes(layer_path: Path) -> int:
    """The bytecode ``layers/build.py`` compiled into the layer (its marker's ``bytecode.bytes``; 0 without)."""
    marker = json.loads((layer_path / MARKER).read_text())
    return int((marker.get("bytecode") or {}).get("bytes", 0))


def _handlers_record(handlers_mb: float, bytecode_mb: float) -> Record:
    """The function code as the stack stages it, with the bytecode compiled into it."""
    return Record(
        "handlers asset",
        "-",
        "function code (handlers/)",
        "unzipped size",
        handlers_mb,
        None,
        "MB",
        1,
        extra={"bytecode_mb": bytecode_mb},
    )


def _layer_record(arch: str, build: dict[str, object], seconds: float, layer_mb: float, bytecode_mb: float) -> Record:
    """The layer's packages without bytecode (its target's figure), the bytecode and the build beside it."""
    return Record(
        "layer",
        "-",
        f"{arch} python{PYTHON}",
        PACKAGES_METRIC,
        layer_mb - bytecode_mb,
        None,
        "MB",
        1,
        extra={
            "bytecode_mb": bytecode_mb,
            "with_bytecode_mb": layer_mb,
            "bytecode_python": build.get("bytecode"),
            "before_strip_mb": int(str(build["bytes_before_strip"])) / MB,
            "cached": build["cached"],
            "build_s": seconds,
            "hash": build["hash"],
            "top_entries_mb": _top_entries(Path(str(build["path"])) / "python"),
            "lambda_compatible": build["lambda_compatible"],
        },
    )


def _zip_function_record(arch: str, total_mb: float, bytecode_mb: float) -> Record:
    """Layer and handlers together, bytecode included, against Lambda's 250 MB unzipped limit."""
    return Record(
        "zip function",
        "-",
        f"{arch} python{PYTHON}",
        "unzipped size (layer + handlers)",
        total_mb,
        None,
        "MB",
        1,
        extra={
            "limit_mb": LIMIT_MB,
            "share_of_limit": total_mb / LIMIT_MB,
            "headroom_mb": LIMIT_MB - total_mb,
            "bytecode_mb": bytecode_mb,
        },
    )


def measure(quick: bool) -> StepResult:
    """The handlers asset, then each architecture's layer and zip function, as records."""
    result = StepResult()
    asset = _handlers_asset()
    handlers_mb = tree_bytes(asset) / MB
    handlers_bytecode_mb = sum(tree_bytes(d) for d in asset.rglob("__pycache__")) / MB
    result.records.append(_handlers_record(handlers_mb, handlers_bytecode_mb))
    for arch in ARCHITECTURES:
        build, seconds = _build(arch)
        layer_mb = int(str(build["bytes"])) / MB
        bytecode_mb = layer_bytecode_bytes(Path(str(build["path"]))) / MB
        result.records.append(_layer_record(arch, build, seconds, layer_mb, bytecode_mb))
        result.records.append(_zip_function_record(arch, layer_mb + handlers_mb, bytecode_mb + handlers_bytecode_mb))
        print(
            f"  package {arch}: layer {layer_mb:.1f} MB, of which bytecode {bytecode_mb:.1f} MB "
            f"({'cached' if build['cached'] else 'built'})",
            flush=True,
        )
    result.notes.append(
        f"package: handlers asset staged at {asset.relative_to(ROOT)}; MB = 2^20 bytes; the layer's packages are "
        "measured stripped and without the bytecode layers/build.py compiles into them (its marker's bytecode.bytes), "
        "the zip function with it"
    )
    return result

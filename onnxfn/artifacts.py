"""Writing and reading ``model_artifacts/<name>/``: files plus a manifest, written all at once.

An artifact is built in a temporary folder beside its destination and renamed into place, so a
failed or interrupted build never leaves a half-written artifact behind.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from contract.manifest import SCHEMA_VERSION, Manifest, ManifestError
from onnxfn.errors import UserError

DEFAULT_ROOT = Path(os.environ.get("ONNXFN_ARTIFACTS", "model_artifacts"))


class ArtifactExists(UserError, FileExistsError):
    """The destination already holds an artifact and replacing it was not asked for."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_facts(path: Path, optimization_level: str | None = None) -> dict[str, Any]:
    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    facts: dict[str, Any] = {"opset": opset, "ir_version": model.ir_version, "producer": model.producer_name or None}
    if optimization_level:
        facts["optimization_level"] = optimization_level
    return facts


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (an unbounded threshold, a ratio over zero) as null: JSON
    has no Infinity or NaN, and a manifest must load in any JSON parser."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def draft_manifest(name: str, files: Mapping[str, tuple[Path, str]], spec: Mapping[str, Any]) -> Manifest:
    """The manifest of ``files`` (relative path -> (file, role)) and ``spec``, validated, written nowhere.

    ``spec`` holds the manifest fields other than ``schema_version``, ``name``, ``files`` and
    ``onnx``, which are computed here from the files.
    """
    entries = [
        {"path": relative, "role": role, "sha256": sha256_file(path), "bytes": path.stat().st_size}
        for relative, (path, role) in files.items()
    ]
    models = [path for path, role in files.values() if role == "model"]
    if len(models) != 1:
        raise ManifestError("an artifact needs exactly one file with role 'model'")
    document = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        **{k: json_safe(v) for k, v in spec.items() if k != "optimization_level"},
        "files": entries,
        "onnx": onnx_facts(models[0], spec.get("optimization_level")),
    }
    return Manifest.from_dict(document)


def write_artifact(
    name: str,
    files: Mapping[str, tuple[Path, str]],
    spec: Mapping[str, Any],
    *,
    root: Path = DEFAULT_ROOT,
    force: bool = False,
    extras: Mapping[str, Path] | None = None,
) -> Manifest:
    """Copy ``files`` (relative path -> (source, role)) and a manifest built from ``spec`` into ``root/name``.

    ``spec`` is as for ``draft_manifest``. The manifest is validated before anything is renamed.
    ``extras`` (report, plots) are copied beside the model but not listed in the manifest, so the
    function never fetches them.
    """
    destination = root / name
    if destination.exists() and not force:
        raise ArtifactExists(f"{destination} already exists; pass --force to replace it")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    staging.chmod(0o755)
    try:
        copies = {}
        for relative, (source, role) in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            copies[relative] = (target, role)
        for relative, source in (extras or {}).items():
            shutil.copyfile(source, staging / relative)
        manifest = draft_manifest(name, copies, spec)
        (staging / "manifest.json").write_text(manifest.to_json())
        _replace(staging, destination)
        return manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(staging: Path, destination: Path) -> None:
    """Rename ``staging`` onto ``destination``; an old artifact is moved aside first, then removed."""
    if destination.exists():
        retired = destination.with_name(f".{destination.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        destination.rename(retired)
        staging.rename(destination)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(destination)


def list_artifacts(root: Path = DEFAULT_ROOT) -> list[Manifest]:
    """Every valid artifact under ``root``, by name."""
    manifests = []
    for path in sorted(root.glob("*/manifest.json")):
        if not path.parent.name.startswith("."):
            manifests.append(Manifest.load(path))
    return manifests

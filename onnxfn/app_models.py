"""The models the CDK app deploys: ``cdk.json``'s ``context.onnxfn.models``, which ``onnxfn add`` and
``onnxfn remove`` keep in step with ``model_artifacts/``.

``cdk.json`` is written whole and atomically (a sibling temporary file renamed over it), two-space
indented; only ``context.onnxfn.models`` changes.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxfn.errors import UserError


class AppConfigError(UserError):
    """``cdk.json`` cannot be read or has no ``context.onnxfn`` object."""


@dataclass(frozen=True)
class App:
    """A CDK app's ``cdk.json`` and the artifact folder it deploys from."""

    path: Path
    artifacts: Path

    def document(self) -> dict[str, Any]:
        return _read(self.path)

    def models(self) -> dict[str, Any] | None:
        """``onnxfn.models``, or None when the app deploys every artifact it finds."""
        models = self.document()["context"]["onnxfn"].get("models")
        return dict(models) if isinstance(models, dict) else None

    def deploys(self, name: str) -> bool:
        models = self.models()
        return (self.artifacts / name / "manifest.json").exists() if models is None else name in models


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AppConfigError(f"{path}: cannot be read as JSON ({exc})") from exc
    onnxfn = document.get("context", {}).get("onnxfn") if isinstance(document, dict) else None
    if not isinstance(onnxfn, dict):
        raise AppConfigError(f'{path}: expected a "context": {{"onnxfn": {{...}}}} object (see docs/configuration.md)')
    return dict(document)


def find_app(artifacts: Path, cdk_json: Path | None = None) -> tuple[App | None, str]:
    """The app that deploys from ``artifacts``, or None and why not (no cdk.json, another folder)."""
    path = cdk_json or Path("cdk.json")
    if not path.exists():
        where = path if cdk_json else Path.cwd() / "cdk.json"
        return None, f"no {where} (run onnxfn in the app's folder, or pass --cdk-json PATH)"
    onnxfn = _read(path)["context"]["onnxfn"]
    deployed = (path.parent / str(onnxfn.get("artifacts_dir", "model_artifacts"))).resolve()
    if deployed != artifacts.resolve():
        return None, f"{path} deploys the artifacts in {deployed}, not {artifacts.resolve()}"
    return App(path, deployed), ""


def _write(path: Path, document: dict[str, Any]) -> None:
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def register(app: App, name: str, recommended_mb: int, memory_mb: int | None = None) -> str:
    """Make the app deploy ``name``: listed under ``onnxfn.models`` with ``memory_mb`` (the user's, or the
    recommended size for a new entry; an existing entry keeps its own unless ``memory_mb`` is given)."""
    document = app.document()
    onnxfn = document["context"]["onnxfn"]
    models = onnxfn.get("models")
    if not isinstance(models, dict):
        # The app deployed every artifact it found: list them all, so that nothing it deployed is dropped.
        from stacks.config import artifact_names

        models = {other: {} for other in artifact_names(app.artifacts) if other != name}
    entry = dict(models.get(name) or {})
    if memory_mb is not None:
        entry["memory_mb"] = memory_mb
        said = f"memory_mb {memory_mb} (yours; {recommended_mb} recommended)"
    elif "memory_mb" in entry:
        said = f"memory_mb {entry['memory_mb']} kept ({recommended_mb} recommended; --memory-mb changes it)"
    else:
        entry["memory_mb"] = recommended_mb
        said = f"memory_mb {recommended_mb} (recommended)"
    new = name not in models
    models[name] = entry
    onnxfn["models"] = models
    _write(app.path, document)
    return f"{'registered' if new else 'updated'} {name} in {app.path}: {said}"


def unregister(app: App, name: str) -> str:
    """Stop deploying ``name``; when it was the last model listed, the app goes back to every artifact."""
    document = app.document()
    onnxfn = document["context"]["onnxfn"]
    models = onnxfn.get("models")
    if not isinstance(models, dict) or name not in models:
        return f"{app.path} does not list {name}"
    del models[name]
    if models:
        onnxfn["models"] = models
    else:
        del onnxfn["models"]
    _write(app.path, document)
    return f"unregistered {name} from {app.path}" + ("" if models else " (no model listed: every artifact deploys)")

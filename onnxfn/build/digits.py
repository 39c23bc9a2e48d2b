"""The ``digits`` demo model: a scikit-learn classifier on the bundled digits data, via skl2onnx."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from contract.manifest import Manifest
from handlers.runtime.pipelines import classification_outputs
from onnxfn.artifacts import DEFAULT_ROOT, write_artifact

NAME = "digits"
INPUT = "pixels"
CLASSES = 10


def train() -> tuple[Any, np.ndarray, np.ndarray]:
    """A scaled logistic regression on 8×8 digit images; returns the model and held-out data."""
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
    return model, x_test, y_train


def to_onnx(model: Any) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        initial_types=[(INPUT, FloatTensorType([None, 64]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onx.SerializeToString())


def build(root: Path = DEFAULT_ROOT, *, force: bool = True) -> Manifest:
    """Train, convert, check labels against scikit-learn and write ``root/digits``."""
    import onnxruntime as ort

    model, x_test, _ = train()
    data = to_onnx(model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {INPUT: x_test})
    expected = model.predict(x_test)
    agreement = float(np.mean(labels == expected))
    if agreement != 1.0:
        raise RuntimeError(f"ONNX labels agree with scikit-learn on {agreement:.4f} of the test set, expected 1.0")
    max_diff = float(np.abs(probabilities - model.predict_proba(x_test)).max())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        return write_artifact(
            NAME,
            {"model.onnx": (path, "model")},
            {
                "version": "1",
                "description": "Logistic regression on the scikit-learn 8x8 digits data set (skl2onnx, zipmap off)",
                "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, 64]}],
                "outputs": classification_outputs([str(i) for i in range(CLASSES)], CLASSES),
                "limits": {"max_batch": 1024, "max_elements": 1024 * 64},
                "pipeline": {
                    "kind": "classification",
                    "scores_output": "probabilities",
                    "softmax": False,
                    "labels": [str(i) for i in range(CLASSES)],
                },
                "quantization": {"method": "none", "reason": "a 10-class linear model is already small"},
                "validation": {
                    "samples": len(x_test),
                    "top1_agreement": agreement,
                    "max_probability_diff": max_diff,
                    "accuracy": float(np.mean(labels == _test_labels())),
                },
            },
            root=root,
            force=force,
        )


def _test_labels() -> np.ndarray:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    features, labels = load_digits(return_X_y=True)
    _, _, _, y_test = train_test_split(features, labels, test_size=0.25, random_state=0, stratify=labels)
    return np.asarray(y_test)

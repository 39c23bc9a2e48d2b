"""TensorFlow SavedModel folders, converted to ONNX by tf2onnx in a venv of their own.

TensorFlow is large (about 270 MB as a wheel) and never enters the project's venv: the first
SavedModel added creates ``.cache/tf-venv`` from the pins below (a stamp marks it complete; changed
pins rebuild it). There tf2onnx converts the model's ``serving_default`` signature, and TensorFlow
runs it on random inputs, whose outputs onnxruntime must reproduce here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from onnxfn.prepare.sources import Source, SourceError, SourceOptions, exported
from onnxfn.prepare.validation import Task

PINS = ("tensorflow-cpu==2.21.0", "tf2onnx==1.17.0")
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".cache" / "tf-venv"
OPSET = 17

# Run in the TF venv: the signature's inputs, random feeds for them, TensorFlow's outputs.
REFERENCE = r"""
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
signature = model.signatures["serving_default"]
_, inputs = signature.structured_input_signature
rng = np.random.default_rng(0)
feeds = {}
for name, spec in inputs.items():
    shape = [2 if d is None else int(d) for d in spec.shape]
    dtype = spec.dtype.as_numpy_dtype
    floating = np.issubdtype(dtype, np.floating)
    feeds[name] = (rng.standard_normal(shape) if floating else rng.integers(0, 10, shape)).astype(dtype)
outputs = {name: value.numpy() for name, value in signature(**{k: tf.constant(v) for k, v in feeds.items()}).items()}
np.savez(sys.argv[2], **{f"in:{k}": v for k, v in feeds.items()}, **{f"out:{k}": v for k, v in outputs.items()})
print(json.dumps({"inputs": sorted(feeds), "outputs": sorted(outputs), "tensorflow": tf.__version__}))
"""


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").exists()


def _stamp() -> str:
    return hashlib.sha256(" ".join(PINS).encode()).hexdigest()[:16]


def ensure_venv(say: Callable[[str], None] = lambda _: None) -> Path:
    """The TF venv's interpreter, creating the venv first when it is missing or stale."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".onnxfn-stamp"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == _stamp():
        return python
    say(f"installing {', '.join(PINS)} into {VENV} (once)")
    staging = VENV.with_name(f"{VENV.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for command in (
        [sys.executable, "-m", "venv", str(staging)],
        [str(staging / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input", *PINS],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise SourceError(f"the TensorFlow venv could not be made: {(done.stderr or done.stdout)[-600:]}")
    (staging / ".onnxfn-stamp").write_text(_stamp() + "\n")
    shutil.rmtree(VENV, ignore_errors=True)
    staging.rename(VENV)
    # The venv's scripts name the folder it was built in; its interpreter does not, which is all we run.
    return python


def convert(path: Path, target: Path, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """``path`` (a SavedModel) as ONNX at ``target``, checked against TensorFlow; the facts of it."""
    python = ensure_venv(say)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    command = [str(python), "-m", "tf2onnx.convert", "--saved-model", str(path), "--output", str(target)]
    done = subprocess.run([*command, "--opset", str(OPSET)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not target.exists():
        lines = [line for line in (done.stderr or done.stdout).splitlines() if "ERROR" in line or "Error" in line]
        reason = lines[-1] if lines else (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        raise SourceError(f"{path.name}: tf2onnx could not convert it: {str(reason)[:600]}")
    reference = target.with_suffix(".reference.npz")
    done = subprocess.run(
        [str(python), "-c", REFERENCE, str(path), str(reference)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SourceError(f"{path.name}: TensorFlow could not run its serving_default signature: {done.stderr[-600:]}")
    facts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    facts["error"] = _compare(target, reference)
    if facts["error"] > 1e-3:
        raise SourceError(f"the converted ONNX model differs from TensorFlow by {facts['error']:.2e} (max abs)")
    return facts


def _compare(model: Path, reference: Path) -> float:
    """The largest difference between onnxruntime's outputs and TensorFlow's on the same feeds."""
    import onnxruntime as ort

    data = np.load(reference)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feeds = {i.name: data[f"in:{i.name}"] for i in session.get_inputs()}
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    return max(float(np.max(np.abs(got[name] - data[f"out:{name}"]))) for name in got if f"out:{name}" in data)


def from_saved_model(path: Path, staging: Path, options: SourceOptions) -> Source:
    """A TensorFlow SavedModel: tf2onnx in its own venv (``tensorflow_source``); with ``--labels`` its one
    output is read as a classifier's scores."""
    target = staging / "original.onnx"
    facts = convert(path, target)
    known = {"tensorflow": facts["tensorflow"], "export_max_abs_error": facts["error"], "exporter": "tf2onnx"}
    source = exported("savedmodel", target, known)
    outputs = source.outputs
    if options.labels:
        classes = int(outputs[0]["shape"][-1]) if len(outputs) == 1 and outputs[0]["shape"] else 0
        if classes != len(options.labels):
            raise SourceError(f"--labels names {len(options.labels)} classes; the model's output is {outputs}")
        scores = outputs[0]["name"]
        from handlers.runtime.pipelines.classification import classification_outputs

        source.outputs = classification_outputs(options.labels, classes)
        source.pipeline = {
            "kind": "classification",
            "scores_output": scores,
            "softmax": False,
            "labels": options.labels,
        }
        source.task = Task(kind="classifier", output=scores)
    return source

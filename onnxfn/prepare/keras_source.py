"""Keras models (``.keras``, or a legacy ``.h5``), converted to ONNX by Keras 3 itself on its torch backend.

The conversion runs in a child process: Keras picks its backend once, at import, and the torch
backend (the torch ``onnxfn add`` already uses for PyTorch sources) exports the model with
``torch.onnx``. The child loads the model (``safe_mode``: no arbitrary code from Lambda layers),
calls it once, exports it, names the graph's outputs after the model's, and checks onnxruntime
against Keras on random inputs. A layer ONNX cannot express fails the export with Keras' own message.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from onnxfn.prepare.sources import Source, SourceError, SourceOptions, exported
from onnxfn.prepare.validation import Task

CONVERT = r"""
import json, os, sys
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np
import keras
import onnx
import onnxruntime as ort

source, target = sys.argv[1], sys.argv[2]
model = keras.saving.load_model(source, safe_mode=True)
rng = np.random.default_rng(0)
shapes = [[2 if d is None else int(d) for d in t.shape] for t in model.inputs]
feeds = [rng.standard_normal(s).astype(t.dtype if t.dtype != "float64" else "float32")
         for s, t in zip(shapes, model.inputs)]
expected = model.predict(feeds if len(feeds) > 1 else feeds[0], verbose=0)
model.export(target, format="onnx", verbose=False)
graph = onnx.load(target)
names = [getattr(t, "_keras_history", [None])[0].name if getattr(t, "_keras_history", None) else f"output_{i}"
         for i, t in enumerate(model.outputs)]
renamed = dict(zip([o.name for o in graph.graph.output], names))
for node in graph.graph.node:
    node.output[:] = [renamed.get(o, o) for o in node.output]
    node.input[:] = [renamed.get(i, i) for i in node.input]
for output in graph.graph.output:
    output.name = renamed.get(output.name, output.name)
onnx.save(graph, target)
session = ort.InferenceSession(target, providers=["CPUExecutionProvider"])
got = session.run(None, {i.name: f for i, f in zip(session.get_inputs(), feeds)})
expected = expected if isinstance(expected, list) else [expected]
error = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(got, expected))
last = model.layers[-1]
activation = getattr(getattr(last, "activation", None), "__name__", None)
print(json.dumps({"error": error, "activation": activation, "keras": keras.__version__, "outputs": names,
                  "classes": int(model.outputs[0].shape[-1] or 0), "layers": len(model.layers)}))
"""


def convert(path: Path, target: Path) -> dict[str, Any]:
    """Export ``path`` to ``target`` in a child process; the facts it printed, or the reason it failed."""
    # Not imported here: Keras would pick its backend (TensorFlow by default) for this whole process.
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("torch") is None:
        raise SourceError("Keras sources need keras and torch: pip install keras==3.15.1 torch==2.13.0")
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", CONVERT, str(path), str(target)], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0 or not target.exists():
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit {result.returncode}"
        raise SourceError(f"{path.name}: Keras could not export it to ONNX: {reason[:600]}")
    facts: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if facts["error"] > 1e-3:
        raise SourceError(f"the exported ONNX model differs from Keras by {facts['error']:.2e} (max abs)")
    return facts


def from_keras(path: Path, staging: Path, options: SourceOptions) -> Source:
    """A Keras model: exported by Keras (``keras_source``); a softmax head becomes a classification."""
    target = staging / "original.onnx"
    facts = convert(path, target)
    exporter = "keras (torch backend)"
    source = exported(
        "keras", target, {"keras": facts["keras"], "export_max_abs_error": facts["error"], "exporter": exporter}
    )
    outputs = source.outputs
    classes = int(facts["classes"])
    if options.labels and len(options.labels) != classes:
        raise SourceError(f"--labels names {len(options.labels)} classes, the model outputs {classes} scores")
    if facts["activation"] == "softmax" and len(outputs) == 1:
        labels = options.labels or []
        scores = outputs[0]["name"]
        from handlers.runtime.pipelines.classification import classification_outputs

        source.outputs = classification_outputs(labels, classes)
        source.pipeline = {"kind": "classification", "scores_output": scores, "softmax": False, "labels": labels}
        source.task = Task(kind="classifier", output=scores)
    elif options.labels:
        raise SourceError("--labels: the model's last layer is not a softmax, so it is not read as a classifier")
    return source

"""A Keras model, saved as users save it, added like any other: exported by Keras on its torch backend,
checked against Keras, a softmax head read as a classifier."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from contract.manifest import Manifest
from onnxfn.cli import main

TRAIN = textwrap.dedent(
    """
    import os, sys
    os.environ["KERAS_BACKEND"] = "torch"
    import keras, numpy as np
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(20,), name="features")
    x = keras.layers.Dense(32, activation="relu")(inputs)
    head = sys.argv[2]
    out = keras.layers.Dense(3, activation=head, name="scores")(x)
    model = keras.Model(inputs, out)
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 20)).astype("float32")
    model.fit(x, np.eye(3)[(x[:, 0] > 0).astype(int) + (x[:, 1] > 1)], epochs=3, verbose=0)
    model.save(sys.argv[1])
    """
)


def _saved(tmp_path, name, head):
    path = tmp_path / f"{name}.keras"
    subprocess.run(
        [sys.executable, "-c", TRAIN, str(path), head], check=True, env={**os.environ, "KERAS_BACKEND": "torch"}
    )
    return path


def _add(root, source, name, *extra):
    return main(["--root", str(root), "add", str(source), "--name", name, "--no-fit", *extra])


def test_a_keras_classifier_becomes_a_classification(tmp_path):
    root = tmp_path / "artifacts"
    assert _add(root, _saved(tmp_path, "clf", "softmax"), "kclf", "--labels", "low,mid,high") == 0
    manifest = Manifest.load(root / "kclf" / "manifest.json")
    assert manifest.inputs[0].name == "features" and manifest.inputs[0].shape == (-1, 20)
    assert manifest.pipeline is not None and manifest.pipeline.kind == "classification"
    assert manifest.pipeline.labels == ("low", "mid", "high") and manifest.pipeline.scores_output == "scores"
    assert manifest.validation["drift"]["top1_agreement"] >= 0.99


def test_a_keras_regressor_stays_raw_and_refuses_labels(tmp_path, capsys):
    root = tmp_path / "artifacts"
    source = _saved(tmp_path, "reg", "linear")
    assert _add(root, source, "kreg", "--labels", "a,b,c") == 2
    assert "--labels: the model's last layer is not a softmax" in capsys.readouterr().err
    assert _add(root, source, "kreg") == 0
    manifest = Manifest.load(root / "kreg" / "manifest.json")
    assert manifest.pipeline is None and [t.name for t in manifest.outputs] == ["scores"]


def test_a_file_keras_cannot_read_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    assert _add(tmp_path / "artifacts", tmp_path / "broken.keras", "broken") == 2
    err = capsys.readouterr().err.strip()
    assert "broken.keras: Keras could not export it to ONNX" in err and len(err.splitlines()) <= 3

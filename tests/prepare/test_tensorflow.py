"""A TensorFlow SavedModel, added like any other: converted by tf2onnx in TensorFlow's own venv (made on
first use), checked against TensorFlow, then quantized, gated and written as usual."""

from __future__ import annotations

import subprocess
import textwrap

from contract.manifest import Manifest
from onnxfn.cli import main
from onnxfn.prepare.tensorflow_source import VENV, ensure_venv

SAVE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    class Classifier(tf.Module):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.w = tf.Variable(rng.standard_normal((10, 3)).astype("float32"))
            self.b = tf.Variable(np.zeros(3, "float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 10], tf.float32, name="features")])
        def serve(self, features):
            return {"probabilities": tf.nn.softmax(tf.matmul(features, self.w) + self.b)}

    model = Classifier()
    tf.saved_model.save(model, sys.argv[1], signatures={"serving_default": model.serve})
    """
)


def test_a_saved_model_is_converted_checked_and_added(tmp_path, capsys):
    python = ensure_venv()
    assert (VENV / ".onnxfn-stamp").exists() and ensure_venv() == python  # made once, then reused
    subprocess.run([str(python), "-c", SAVE, str(tmp_path / "saved")], check=True, capture_output=True)
    root = tmp_path / "artifacts"
    args = ["--root", str(root), "add", str(tmp_path / "saved"), "--name", "tfclf", "--no-fit"]
    assert main([*args, "--labels", "a,b"]) == 2
    assert "--labels names 2 classes" in capsys.readouterr().err
    assert main([*args, "--labels", "a,b,c"]) == 0
    manifest = Manifest.load(root / "tfclf" / "manifest.json")
    assert manifest.inputs[0].name == "features" and manifest.inputs[0].shape == (-1, 10)
    assert manifest.pipeline is not None and manifest.pipeline.labels == ("a", "b", "c")
    assert manifest.validation["drift"]["top1_agreement"] >= 0.99


def test_a_folder_that_is_no_model_says_what_would_be(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--root", str(tmp_path / "a"), "add", str(tmp_path / "empty"), "--name", "x", "--no-fit"]) == 2
    assert "neither a BERT checkpoint nor a SavedModel" in capsys.readouterr().err

"""`onnxfn add` follows each tensor's layout: a model exported with batch 1, a state tensor with its batch
on axis 1, a scalar input; the function's codecs then hold requests to it."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort

from contract.manifest import Manifest
from onnxfn.cli import main
from tests.models.graphs import fixed_batch_cnn, silero_like


def _add(root, source, name, *extra):
    return main(["--root", str(root), "add", str(source), "--name", name, "--no-fit", *extra])


def test_a_fixed_batch_cnn_is_added_at_its_batch_and_its_convs_quantized(tmp_path, capsys):
    root = tmp_path / "artifacts"
    source = fixed_batch_cnn(tmp_path / "cnn.onnx")
    assert _add(root, source, "cnn", "--batch-sizes", "8") == 2
    assert "--batch-sizes 8: this model takes batches of 1 only" in capsys.readouterr().err
    assert _add(root, source, "cnn") == 0
    manifest = Manifest.load(root / "cnn" / "manifest.json")
    assert manifest.inputs[0].shape == (1, 3, 32, 32) and manifest.inputs[0].fixed_batch == 1
    assert manifest.limits.max_batch == 1 and manifest.rows_per_run == 1
    quantization = manifest.quantization
    assert quantization["method"] == "static" and quantization["recipe"] == "auto"
    assert quantization["quantized_nodes"] == 3 and "1 Gemm, 2 Conv" in quantization["reason"]
    latency = manifest.validation["latency_ms"]["prepared"]
    assert all(set(by_batch) == {"1"} for by_batch in latency.values())


def test_state_on_axis_one_and_a_scalar_are_read_from_the_graph(tmp_path):
    root = tmp_path / "artifacts"
    source = silero_like(tmp_path / "vad.onnx")
    requests = tmp_path / "requests.jsonl"
    rng = np.random.default_rng(0)
    with requests.open("w") as out:
        for rows in (1, 3, 2):
            body = {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": [rows, 64],
                        "data": rng.standard_normal(rows * 64).tolist(),
                    },
                    {"name": "state", "datatype": "FP32", "shape": [2, rows, 16], "data": [0.1] * (2 * rows * 16)},
                    {"name": "sr", "datatype": "INT64", "shape": [], "data": [16000]},
                ]
            }
            out.write(json.dumps(body) + "\n")
    assert _add(root, source, "vad", "--samples", str(requests)) == 0
    manifest = Manifest.load(root / "vad" / "manifest.json")
    axes = {t.name: t.batch_axis for t in (*manifest.inputs, *manifest.outputs)}
    assert axes == {"input": 0, "state": 1, "sr": None, "output": 0, "stateN": 1}
    assert manifest.input("sr").shape == () and not manifest.batch_first
    assert manifest.validation["samples"] == 6  # the rows of the three requests, each scored whole
    # the artifact serves as the graph does
    session = ort.InferenceSession(str(root / "vad" / "model.onnx"), providers=["CPUExecutionProvider"])
    out, state = session.run(
        None,
        {
            "input": np.zeros((2, 64), np.float32),
            "state": np.zeros((2, 2, 16), np.float32),
            "sr": np.array(8000, np.int64),
        },
    )
    assert out.shape == (2, 1) and state.shape == (2, 2, 16)


def test_a_batch_axis_the_graph_does_not_name_is_given_by_flag(tmp_path, capsys):
    root = tmp_path / "artifacts"
    source = silero_like(tmp_path / "vad.onnx")
    assert _add(root, source, "vad", "--batch-axis", "state=none,nothing=0") == 2
    assert "--batch-axis names no tensor of this model: nothing" in capsys.readouterr().err
    # a tensor without a batch axis and a dynamic dimension cannot be generated: the message says so
    assert _add(root, source, "vad", "--batch-axis", "state=none") == 2
    assert "'state' has a dynamic dimension besides its batch axis ([2, -1, 16])" in capsys.readouterr().err
    assert _add(root, source, "vad", "--batch-axis", "stateN=none") == 0
    manifest = Manifest.load(root / "vad" / "manifest.json")
    assert manifest.output("stateN").batch_axis is None and manifest.input("state").batch_axis == 1

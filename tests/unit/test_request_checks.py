"""What every codec checks before a model sees a request: finite floats, one batch size across the
inputs (each on its own batch axis), scalars and state tensors whole, and onnxruntime's complaints
without its source paths."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from contract.manifest import FileEntry, Limits, Manifest, OnnxFacts, TensorSpec
from handlers.runtime.codecs import oip, v1
from handlers.runtime.errors import InvalidInput
from handlers.runtime.model_store import runtime_message

X = TensorSpec(name="x", datatype="FP32", shape=(-1, 4))
STATE = TensorSpec(name="state", datatype="FP32", shape=(2, -1, 3), batch_axis=1)
SR = TensorSpec(name="sr", datatype="INT64", shape=(), batch_axis=None)


def _manifest(inputs, **limits) -> Manifest:
    return Manifest(
        schema_version=1,
        name="m",
        version="1",
        files=(FileEntry(path="model.onnx", role="model", sha256="0" * 64, bytes=1),),
        onnx=OnnxFacts(opset=17),
        inputs=tuple(inputs),
        outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1, 1)),),
        limits=Limits(**limits),
    )


def _infer(manifest: Manifest, *tensors: dict) -> oip.InferRequest:
    return oip.decode_infer_request(json.dumps({"inputs": list(tensors)}).encode(), None, manifest)


def test_a_value_out_of_fp32_range_is_refused_not_scored_as_inf():
    manifest = _manifest([X])
    with pytest.raises(InvalidInput, match=r'input "x": holds inf or NaN .* 1e300'):
        _infer(manifest, {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1e300, 0, 0, 0]})
    with pytest.raises(InvalidInput, match="holds inf or NaN"):
        v1.decode_predict_document({"instances": [[0.0, float("nan"), 0.0, 0.0]]}, manifest)
    header = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]}
    ).encode()
    body = header + struct.pack("<4f", 0.0, float("inf"), 0.0, 0.0)
    with pytest.raises(InvalidInput, match="holds inf or NaN"):
        oip.decode_infer_request(body, str(len(header)), manifest)


def test_a_model_may_ask_for_non_finite_values():
    manifest = _manifest([X], allow_non_finite=True)
    request = _infer(manifest, {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1e300, 0, 0, 0]})
    assert np.isinf(request.inputs["x"][0, 0])


def test_inputs_with_different_batch_sizes_are_refused():
    manifest = _manifest([X, STATE])
    with pytest.raises(InvalidInput, match=r'different numbers of rows \("x" 2, "state" 3\)'):
        _infer(
            manifest,
            {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [0.0] * 8},
            {"name": "state", "datatype": "FP32", "shape": [2, 3, 3], "data": [0.0] * 18},
        )
    two = _manifest([X, TensorSpec(name="z", datatype="FP32", shape=(-1, 1))])
    with pytest.raises(InvalidInput, match=r'different numbers of rows \("x" 2, "z" 1\)'):
        v1.decode_predict_document({"inputs": {"x": [[0.0] * 4, [1.0] * 4], "z": [[0.0]]}}, two)


def test_state_on_axis_one_and_a_scalar_pass_whole():
    manifest = _manifest([X, STATE, SR])
    request = _infer(
        manifest,
        {"name": "x", "datatype": "FP32", "shape": [3, 4], "data": [0.0] * 12},
        {"name": "state", "datatype": "FP32", "shape": [2, 3, 3], "data": [0.5] * 18},
        {"name": "sr", "datatype": "INT64", "shape": [], "data": [16000]},
    )
    assert request.inputs["state"].shape == (2, 3, 3) and request.inputs["sr"].shape == ()
    assert int(request.inputs["sr"]) == 16000
    fmt, arrays = v1.decode_predict_document(
        {"inputs": {"x": [[0.0] * 4], "state": [[[0.0] * 3], [[0.0] * 3]], "sr": 8000}}, manifest
    )
    assert fmt == "inputs" and arrays["sr"].shape == () and arrays["state"].shape == (2, 1, 3)
    with pytest.raises(InvalidInput, match=r'"instances" stacks rows on axis 0.*"state" \[2, -1, 3\]'):
        v1.decode_predict_document({"instances": [{"x": [0.0] * 4, "state": [], "sr": 1}]}, manifest)
    with pytest.raises(InvalidInput, match="expected one INT64 value"):
        v1.decode_predict_document(
            {"inputs": {"x": [[0.0] * 4], "state": [[[0.0] * 3], [[0.0] * 3]], "sr": [1]}}, manifest
        )


def test_onnxruntime_messages_lose_their_source_paths():
    raw = (
        "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running Reshape node. "
        "Name:'/Reshape' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:47 "
        "onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, bool) input_shape_size == size "
        "was false. The input tensor cannot be reshaped to the requested shape. Input shape:{1,63}"
    )
    message = runtime_message(Exception(raw))
    assert "/onnxruntime_src" not in message and ".h:" not in message and "ReshapeHelper(" not in message
    assert message.startswith("Non-zero status code returned while running Reshape node. Name:'/Reshape'")
    assert message.endswith("cannot be reshaped to the requested shape. Input shape:{1,63}")

"""ONNX graphs written with onnx.helper, deterministic (seeded weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def fixed_batch_cnn(path: Path, size: int = 32, classes: int = 4, seed: int = 3) -> Path:
    """Conv(3→8, 3×3) → Relu → Conv(8→8) → Relu → GlobalAveragePool → Flatten → Gemm → Softmax,
    exported with batch 1: input ``image`` FP32 [1, 3, size, size], output ``probabilities`` [1, classes]."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="/conv1/Conv"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="/conv2/Conv"),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], transB=1, name="/head/Gemm"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    weights = [
        _init(rng, "w1", (8, 3, 3, 3)),
        _init(rng, "b1", (8,), 0.1),
        _init(rng, "w2", (8, 8, 3, 3), 0.2),
        _init(rng, "b2", (8,), 0.1),
        _init(rng, "w3", (classes, 8), 1.0),
        _init(rng, "b3", (classes,), 0.1),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed_batch_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, classes])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def silero_like(path: Path, frame: int = 64, hidden: int = 16, seed: int = 5) -> Path:
    """A voice-activity detector laid out as silero-vad: ``input`` FP32 [batch, frame], ``state`` FP32
    [2, batch, hidden] (batch on axis 1), ``sr`` INT64 scalar; outputs ``output`` [batch, 1] and
    ``stateN`` [2, batch, hidden]. The sample rate scales the frame, as a model resampling would."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Cast", ["sr"], ["sr_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["sr_f", "sr_ref"], ["sr_scale"]),
        helper.make_node("Mul", ["input", "sr_scale"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "w_in"], ["projected"], name="/encoder/MatMul"),
        helper.make_node("ReduceMean", ["state"], ["state_mean"], axes=[0], keepdims=0),
        helper.make_node("Add", ["projected", "state_mean"], ["mixed"]),
        helper.make_node("Tanh", ["mixed"], ["hidden"]),
        helper.make_node("Unsqueeze", ["hidden", "axis0"], ["hidden3"]),
        helper.make_node("Concat", ["hidden3", "hidden3"], ["stateN"], axis=0),
        helper.make_node("MatMul", ["hidden", "w_out"], ["logit"], name="/decoder/MatMul"),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
    ]
    weights = [
        _init(rng, "w_in", (frame, hidden), 0.2),
        _init(rng, "w_out", (hidden, 1), 0.5),
        numpy_helper.from_array(np.array(16000.0, dtype=np.float32), "sr_ref"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
    ]
    graph = helper.make_graph(
        nodes,
        "silero_like",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", frame]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", hidden]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", hidden]),
        ],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


QUADRANTS = [[0, 0, 32, 32], [32, 0, 64, 32], [0, 32, 32, 64], [32, 32, 64, 64]]


def quadrant_detector(path: Path) -> Path:
    """A detector with a known answer: each 32×32 quadrant of a 64×64 input is a candidate box, scored
    by how bright it is (one class, "bright"). ``images`` FP32 [batch, 3, 64, 64] in [0, 1]; outputs
    ``boxes`` [batch, 4, 4] (xyxy, input pixels) and ``scores`` [batch, 4, 1]."""
    nodes = [
        helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("ReduceMean", ["pooled"], ["gray"], axes=[1], keepdims=0),
        helper.make_node("Reshape", ["gray", "flat_shape"], ["flat"]),
        helper.make_node("Sub", ["flat", "half"], ["centered"]),
        helper.make_node("Mul", ["centered", "gain"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["probs"]),
        helper.make_node("Unsqueeze", ["probs", "last_axis"], ["scores"]),
        helper.make_node("Shape", ["images"], ["image_shape"], end=1),
        helper.make_node("Concat", ["image_shape", "box_dims"], ["boxes_shape"], axis=0),
        helper.make_node("Expand", ["quadrants", "boxes_shape"], ["boxes"]),
    ]
    constants = [
        numpy_helper.from_array(np.array([-1, 4], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
        numpy_helper.from_array(np.array(20.0, dtype=np.float32), "gain"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.array([4, 4], dtype=np.int64), "box_dims"),
        numpy_helper.from_array(np.array([QUADRANTS], dtype=np.float32), "quadrants"),
    ]
    graph = helper.make_graph(
        nodes,
        "quadrant_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 4, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4, 1]),
        ],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


DETECTOR_PIPELINE = {
    "kind": "image-detection",
    "input": "image",
    "size": [64, 64],
    "scale": 1 / 255,
    "scores_output": "scores",
    "boxes_output": "boxes",
    "labels": ["bright"],
    "score_threshold": 0.5,
}


def jpeg(width: int, height: int, white: tuple[int, int, int, int]) -> bytes:
    """A black JPEG with one white rectangle (x0, y0, x1, y1)."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (0, 0, 0))
    ImageDraw.Draw(image).rectangle(white, fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()

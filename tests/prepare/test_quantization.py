"""quantize / preoptimize / load_calibration on tiny real models built here: an MLP written with
onnx.helper, a scikit-learn digits classifier (ai.onnx.ml ops) and a two-layer BERT encoder.

One file past 400 lines on purpose: the three functions share the tiny models built here, and
splitting them would build each model twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxfn.prepare import quantization
from onnxfn.prepare.calibration import CalibrationError, load_calibration, model_inputs
from onnxfn.prepare.quantization import MODES, QuantizationError, preoptimize, quantize
from onnxfn.prepare.static import activation_matmuls, ffn_output_matmuls

FEATURES, HIDDEN, CLASSES = 64, 256, 10
# Worst |quantized - fp32| over the held-out rows, as a fraction of the largest |fp32| output.
# Measured on this machine (AVX2, no VNNI): dynamic 0.07, static 0.09, fp16 3e-4. Much of the
# int8 error is the u8s8 kernels' int16 saturation on CPUs without VNNI (see build/quantize.py).
TOLERANCE = {"dynamic": 0.15, "static": 0.15, "blockwise": 0.05, "fp16": 2e-3, "none": 0.0}


def run(path: Path, feeds: dict[str, np.ndarray], *, optimize: bool = True) -> list[np.ndarray]:
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [np.asarray(out) for out in session.run(None, feeds)]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(256, FEATURES)).astype(np.float32)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x @ W1 + b1 -> Relu -> @ W2: 81 KB of weights, two MatMuls with constant weights."""
    rng = np.random.default_rng(1)
    weights = {
        "w1": rng.normal(0, 0.1, (FEATURES, HIDDEN)),
        "b1": rng.normal(0, 0.1, HIDDEN),
        "w2": rng.normal(0, 0.1, (HIDDEN, CLASSES)),
    }
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
            helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
            helper.make_node("Relu", ["hb"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    onnx.save_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """StandardScaler + LogisticRegression via skl2onnx: Scaler, LinearClassifier, Normalizer."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = load_digits(return_X_y=True)
    features = features.astype(np.float32)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(features[:1000], labels[:1000])
    onx = convert_sklearn(
        model,
        initial_types=[("pixels", FloatTensorType([None, FEATURES]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    assert {n.domain for n in onx.graph.node} == {"ai.onnx.ml"}
    path = tmp_path_factory.mktemp("digits") / "digits.onnx"
    onnx.save_model(onx, str(path))
    return path, features[1000:]


def calibration_of(rows: np.ndarray, name: str) -> list[dict[str, np.ndarray]]:
    return [{name: rows[i : i + 16]} for i in range(0, len(rows), 16)]


@pytest.mark.parametrize("mode", MODES)
def test_mlp_every_mode_loads_and_stays_close(mode: str, mlp: Path, data: np.ndarray, tmp_path: Path) -> None:
    dst = tmp_path / "out" / "model.onnx"
    facts = quantize(mlp, dst, mode, calibration=calibration_of(data[:128], "x"))

    held_out = {"x": data[128:]}
    (expected,), (got,) = run(mlp, held_out), run(dst, held_out)
    assert np.abs(got - expected).max() <= TOLERANCE[mode] * np.abs(expected).max()
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= (0.9 if mode in ("dynamic", "static", "blockwise") else 1.0)
    assert facts["method"] == mode
    assert facts["original_bytes"] == mlp.stat().st_size
    assert facts["quantized_bytes"] == dst.stat().st_size
    assert json.loads(json.dumps(facts)) == facts
    assert [p.name for p in dst.parent.iterdir()] == ["model.onnx"]  # no temporary file left behind
    ratio = facts["quantized_bytes"] / facts["original_bytes"]
    if mode in ("dynamic", "static"):
        assert facts["quantized_nodes"] == 2
        assert facts.get("activation_quantized_nodes", 2) == 2
        assert facts["weight_type"] == "QInt8"
        assert ratio < 0.35
    elif mode == "blockwise":
        assert facts["quantized_nodes"] == 2 and facts["bits"] == 8 and facts["block_size"] == 128
        assert [n.op_type for n in onnx.load(str(dst)).graph.node].count("MatMulNBits") == 2
        assert ratio < 0.6  # fc1's 64 rows fill half a block of 128
    elif mode == "fp16":
        weights = onnx.load(str(dst)).graph.initializer
        assert {t.data_type for t in weights if t.name in ("w1", "w2")} == {TensorProto.FLOAT16}
        assert 0.45 < ratio < 0.6
    else:
        assert dst.read_bytes() == mlp.read_bytes()


@pytest.mark.parametrize("mode", MODES)
def test_sklearn_classifier_every_mode_loads_with_same_labels(
    mode: str, digits: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    src, held_out = digits
    dst = tmp_path / "digits.onnx"
    facts = quantize(src, dst, mode, calibration=calibration_of(held_out[:64], "pixels"))

    (labels, probabilities), (got_labels, got_probabilities) = (
        run(src, {"pixels": held_out}),
        run(dst, {"pixels": held_out}),
    )
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_allclose(got_probabilities, probabilities, atol=1e-6)
    # LinearClassifier keeps its weights in attributes: nothing for int8, nothing fp16 can run.
    assert facts["quantized_nodes"] == 0
    if mode in ("dynamic", "static"):
        assert dst.read_bytes() == src.read_bytes()


def test_dynamic_honours_excluded_nodes(mlp: Path, tmp_path: Path) -> None:
    facts = quantize(mlp, tmp_path / "q.onnx", "dynamic", exclude_nodes=["fc2"])

    assert facts["excluded_nodes"] == ["fc2"]
    assert facts["quantized_nodes"] == 1
    kept = {t.name: t.data_type for t in onnx.load(str(tmp_path / "q.onnx")).graph.initializer}
    assert kept["w2"] == TensorProto.FLOAT
    assert "w1" not in kept


def test_unknown_excluded_node_is_an_error(mlp: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match=r"no node named 'fc9'"):
        quantize(mlp, tmp_path / "q.onnx", "dynamic", exclude_nodes=["fc9"])
    assert not (tmp_path / "q.onnx").exists()


def test_static_without_calibration_is_an_error(mlp: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError) as caught:
        quantize(mlp, tmp_path / "q.onnx", "static")
    assert str(caught.value) == (
        "static quantization needs a calibration set: --calibration FILE (.npy, .jsonl or text lines)"
    )


def test_static_calibration_missing_an_input_is_an_error(mlp: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match=r"^static: calibration data: batch 0 lacks input 'x'"):
        quantize(mlp, tmp_path / "q.onnx", "static", calibration=[{"pixels": np.zeros((2, FEATURES), np.float32)}])


def test_unknown_mode_lists_the_modes(mlp: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match=r"'int4'.*dynamic, static, blockwise, fp16, none"):
        quantize(mlp, tmp_path / "q.onnx", "int4")


def test_tool_failure_leaves_no_partial_file(mlp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dst = tmp_path / "model.onnx"
    dst.write_bytes(b"previous version")

    def half_written(src: Path, out: Path, **_: Any) -> None:
        Path(out).write_bytes(b"\x08\x07 half a model")
        raise RuntimeError("Unsupported op: FancyMatMul")

    monkeypatch.setattr(quantization, "quantize_dynamic_int8", half_written)
    with pytest.raises(
        QuantizationError, match=r"^dynamic quantization of mlp.onnx failed: Unsupported op: FancyMatMul"
    ):
        quantize(mlp, dst, "dynamic")
    assert dst.read_bytes() == b"previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_result_that_does_not_load_is_an_error(mlp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quantization, "quantize_dynamic_int8", lambda src, out, **_: Path(out).write_bytes(b"junk"))
    with pytest.raises(QuantizationError, match=r"^dynamic: the result does not load in onnxruntime"):
        quantize(mlp, tmp_path / "model.onnx", "dynamic")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("level", ["all", "layout"])
def test_preoptimize_refuses_cpu_specific_levels(level: str, mlp: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match=r"bakes the build machine's CPU"):
        preoptimize(mlp, tmp_path / "opt.onnx", level)
    assert not (tmp_path / "opt.onnx").exists()


@pytest.mark.parametrize("level", ["basic", "extended"])
@pytest.mark.parametrize("mode", ["none", "dynamic"])
def test_preoptimized_graph_gives_the_same_outputs(
    level: str, mode: str, mlp: Path, data: np.ndarray, tmp_path: Path
) -> None:
    src = tmp_path / "src.onnx"
    quantize(mlp, src, mode)
    facts = preoptimize(src, tmp_path / "opt.onnx", level)

    assert facts == {"optimization_level": level, "bytes": (tmp_path / "opt.onnx").stat().st_size}
    feeds = {"x": np.random.default_rng(7).normal(size=(5, FEATURES)).astype(np.float32)}
    (expected,), (got,) = run(src, feeds), run(tmp_path / "opt.onnx", feeds, optimize=False)
    # Measured: 0 for fp32, < 1e-6 for int8 (same kernels, different summation order at most).
    assert np.abs(got - expected).max() < 1e-5


def write_tiny_bert(folder: Path) -> Path:
    """A random two-layer BERT checkpoint (hidden 32) in the layout onnxfn.prepare.bert reads."""
    from safetensors.numpy import save_file

    hidden, inter, layers = 32, 64, 2
    rng = np.random.default_rng(3)
    config = {
        "vocab_size": 50,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "intermediate_size": inter,
        "max_position_embeddings": 16,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    }
    shapes = {
        "embeddings.word_embeddings.weight": (50, hidden),
        "embeddings.position_embeddings.weight": (16, hidden),
        "embeddings.token_type_embeddings.weight": (2, hidden),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}"
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes |= {f"{p}.{name}.weight": (hidden, hidden), f"{p}.{name}.bias": (hidden,)}
        shapes |= {f"{p}.intermediate.dense.weight": (inter, hidden), f"{p}.intermediate.dense.bias": (inter,)}
        shapes |= {f"{p}.output.dense.weight": (hidden, inter), f"{p}.output.dense.bias": (hidden,)}
    tensors = {name: rng.normal(0, 0.2, shape).astype(np.float32) for name, shape in shapes.items()}
    for norm in ["embeddings.LayerNorm"] + [
        f"encoder.layer.{i}.{n}.LayerNorm" for i in range(layers) for n in ("attention.output", "output")
    ]:
        tensors |= {f"{norm}.weight": np.ones(hidden, np.float32), f"{norm}.bias": np.zeros(hidden, np.float32)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def test_static_bert_excludes_attention_and_ffn_output_matmuls(tmp_path: Path) -> None:
    from onnxfn.prepare.bert import build_bert_encoder, save_model

    src = tmp_path / "bert.onnx"
    model = build_bert_encoder(write_tiny_bert(tmp_path / "ckpt"))
    save_model(model, src)
    rng = np.random.default_rng(4)

    def batch(rows: int, length: int) -> dict[str, np.ndarray]:
        ids = rng.integers(1, 50, (rows, length)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[0, length // 2 :] = 0  # one padded row per batch
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    facts = quantize(src, tmp_path / "q.onnx", "static", calibration=[batch(4, 12) for _ in range(4)])

    scores = [f"/encoder/layer.{i}/attention/self/{n}" for i in (0, 1) for n in ("MatMul", "MatMul_1")]
    ffn_out = [f"/encoder/layer.{i}/output/dense/MatMul" for i in (0, 1)]
    assert sorted(activation_matmuls(model)) == sorted(scores)
    assert ffn_output_matmuls(model) == ffn_out
    assert sorted(facts["auto_excluded_nodes"]) == sorted(scores + ffn_out)
    # Q, K, V, attention output and FFN input of each layer, weights and activations.
    assert facts["quantized_nodes"] == facts["activation_quantized_nodes"] == 2 * 5
    fp16 = quantize(src, tmp_path / "half.onnx", "fp16")
    assert fp16["blocked_op_types"] == ["Add", "Div", "Erf", "MatMul", "Mul", "Softmax", "Sub"]

    feeds = batch(3, 10)
    expected = run(src, feeds)[0]
    for name, floor in (("q.onnx", 0.98), ("half.onnx", 0.9999)):  # measured 0.9936 and 1.0000
        got = run(tmp_path / name, feeds)[0]
        cosine = (got * expected).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(expected, axis=-1)
        assert cosine.min() > floor, name


def test_static_types_activations_behind_contrib_ops(tmp_path: Path) -> None:
    """ONNX cannot type the output of a com.microsoft op (as in graphs fused by onnxruntime.transformers);
    without help the quantizer would leave the next MatMul's activation in fp32."""
    rng = np.random.default_rng(5)
    weights = {
        "w1": rng.normal(0, 0.1, (FEATURES, FEATURES)),
        "w2": rng.normal(0, 0.1, (FEATURES, CLASSES)),
        "gamma": np.ones(FEATURES),
        "beta": np.zeros(FEATURES),
    }
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
            helper.make_node(
                "SkipLayerNormalization", ["h", "x", "gamma", "beta"], ["n"], name="skip_ln", domain="com.microsoft"
            ),
            helper.make_node("MatMul", ["n", "w2"], ["y"], name="fc2"),
        ],
        "fused",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", CLASSES])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        ir_version=8,
    )
    onnx.save_model(model, str(tmp_path / "fused.onnx"))
    x = rng.normal(size=(8, 4, FEATURES)).astype(np.float32)

    facts = quantize(tmp_path / "fused.onnx", tmp_path / "q.onnx", "static", calibration=[{"x": x}])

    assert facts["quantized_nodes"] == facts["activation_quantized_nodes"] == 2
    (expected,), (got,) = run(tmp_path / "fused.onnx", {"x": x}), run(tmp_path / "q.onnx", {"x": x})
    # Measured 0.05 (0.013 with onnxruntime's reference QDQ kernels: the rest is AVX2 u8s8 saturation).
    assert np.linalg.norm(got - expected) < 0.1 * np.linalg.norm(expected)


def test_fp16_removes_cast_round_trips_between_fp32_ops(mlp: Path, tmp_path: Path) -> None:
    facts = quantize(mlp, tmp_path / "half.onnx", "fp16")

    graph = onnx.load(str(tmp_path / "half.onnx")).graph
    casts = [n for n in graph.node if n.op_type == "Cast"]
    # Only the weight casts are left (folded at session start): no fp32 -> fp16 -> fp32 pairs.
    assert sorted(n.input[0] for n in casts) == ["b1", "w1", "w2"]
    assert facts["blocked_op_types"] == ["Add", "MatMul", "Relu"]


# --- calibration files ----------------------------------------------------------------------------

PIXELS = {"pixels": (np.dtype(np.float32), (-1, 64))}


def test_npy_is_batched_and_cast(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.arange(20 * 64, dtype=np.float64).reshape(20, 64))

    feeds = load_calibration(tmp_path / "c.npy", PIXELS, batch_size=8)

    assert [f["pixels"].shape for f in feeds] == [(8, 64), (8, 64), (4, 64)]
    assert all(f["pixels"].dtype == np.float32 for f in feeds)
    assert load_calibration(tmp_path / "c.npy", PIXELS, limit=5)[0]["pixels"].shape == (5, 64)


def test_npy_of_the_wrong_shape_names_the_input(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.zeros((10, 63), np.float32))

    with pytest.raises(CalibrationError) as caught:
        load_calibration(tmp_path / "c.npy", PIXELS)
    assert str(caught.value) == "calibration data: expected shape [-1, 64] for input 'pixels', got [10, 63]"


def test_npy_needs_a_single_input_model(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.zeros((4, 3), np.float32))
    two = {"a": (np.dtype(np.float32), (-1, 3)), "b": (np.dtype(np.float32), (-1, 3))}
    with pytest.raises(CalibrationError, match=r"2 inputs \(a, b\); use .jsonl"):
        load_calibration(tmp_path / "c.npy", two)


def test_jsonl_rows_are_checked_per_input(tmp_path: Path) -> None:
    spec = {"ids": (np.dtype(np.int64), (-1, -1)), "scale": (np.dtype(np.float32), (-1, 2))}
    rows = [{"ids": [1, 2, 3], "scale": [0.5, 1.0]}] * 3 + [{"ids": [4, 5], "scale": [1, 2]}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")

    feeds = load_calibration(tmp_path / "c.jsonl", spec, batch_size=2)

    # Rows of another sequence length start a new batch rather than fail to stack.
    assert [f["ids"].shape for f in feeds] == [(2, 3), (1, 3), (1, 2)]
    assert feeds[0]["ids"].dtype == np.int64
    assert feeds[2]["scale"].dtype == np.float32

    (tmp_path / "bad.jsonl").write_text(json.dumps({"ids": [1], "scale": [1, 2, 3]}) + "\n")
    with pytest.raises(CalibrationError, match=r"line 1: expected shape \[-1, 2\] for input 'scale', got \[1, 3\]"):
        load_calibration(tmp_path / "bad.jsonl", spec)
    (tmp_path / "missing.jsonl").write_text(json.dumps({"ids": [1]}) + "\n")
    with pytest.raises(CalibrationError, match=r"line 1: expected keys ids, scale; missing scale"):
        load_calibration(tmp_path / "missing.jsonl", spec)


def fake_tokenize(texts: list[str]) -> dict[str, np.ndarray]:
    longest = max(len(t.split()) for t in texts)
    ids = np.array([[len(w) for w in t.split()] + [0] * (longest - len(t.split())) for t in texts])
    return {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}


TEXT_INPUTS = {name: (np.dtype(np.int64), (-1, -1)) for name in ("input_ids", "attention_mask")}


def test_text_lines_and_jsonl_strings_go_through_the_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("one two\n\nthree four five\nsix\n")
    (tmp_path / "c.jsonl").write_text('"one two"\n"three four five"\n"six"\n')

    for name in ("c.txt", "c.jsonl"):
        feeds = load_calibration(tmp_path / name, TEXT_INPUTS, tokenize=fake_tokenize, batch_size=2)
        assert [sorted(f) for f in feeds] == [["attention_mask", "input_ids"]] * 2  # token_type_ids dropped
        assert [f["input_ids"].shape for f in feeds] == [(2, 3), (1, 1)]


def test_text_without_a_tokenizer_lists_the_formats(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("hello\n")
    with pytest.raises(CalibrationError, match=r"only a text model .* supported formats: .npy .*\.jsonl"):
        load_calibration(tmp_path / "c.txt", PIXELS)


@pytest.mark.parametrize("name", ["c.npy", "c.jsonl", "c.txt"])
def test_empty_file_is_an_error(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, np.zeros((0, 64), np.float32))
    else:
        path.write_text("\n")
    with pytest.raises(CalibrationError, match=r"holds no rows"):
        load_calibration(path, PIXELS if name.endswith(".npy") else TEXT_INPUTS, tokenize=fake_tokenize)


def test_model_inputs_reads_dtypes_and_dynamic_dims(mlp: Path) -> None:
    assert model_inputs(mlp) == {"x": (np.dtype(np.float32), (-1, FEATURES))}

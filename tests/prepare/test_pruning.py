"""``onnxfn add --prune``: feed-forward blocks found in real graphs, neurons ranked on calibration
activations, cut from both weights, their mean folded into the bias; the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from contract.manifest import Manifest
from onnxfn.cli import main
from onnxfn.prepare.pruning import (
    PruningError,
    feed_forward_blocks,
    kept_neurons,
    neuron_scores,
    prune_feed_forward,
)

RNG = np.random.default_rng(11)
IN, HIDDEN, OUT = 16, 64, 8


def _mlp(*, gemm: bool = False, residual: bool = False, dead: int = 0) -> onnx.ModelProto:
    """x -> W1 (+b1) -> Relu -> W2 (+b2). ``gemm``: Gemm nodes with [out, in] weights, as PyTorch
    exports nn.Linear; ``residual``: the hidden tensor is also a graph output; ``dead``: that many
    neurons never fire (zero weights, negative bias)."""
    w1 = RNG.standard_normal((IN, HIDDEN)).astype(np.float32) * 0.5
    b1 = RNG.standard_normal(HIDDEN).astype(np.float32) * 0.1
    w1[:, :dead], b1[:dead] = 0.0, -1.0
    w2 = RNG.standard_normal((HIDDEN, OUT)).astype(np.float32) * 0.5
    b2 = RNG.standard_normal(OUT).astype(np.float32) * 0.1
    if gemm:
        nodes = [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1),
        ]
        weights = {"w1": w1.T.copy(), "b1": b1, "w2": w2.T.copy(), "b2": b2}
    else:
        nodes = [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Add", ["b1", "h"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["m"]),
            helper.make_node("Add", ["m", "b2"], ["y"]),
        ]
        weights = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT])]
    if residual:
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["batch", HIDDEN]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", IN])],
        outputs,
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _feeds(rows: int = 256) -> list[dict[str, np.ndarray]]:
    x = RNG.standard_normal((rows, IN)).astype(np.float32)
    return [{"x": x[i : i + 32]} for i in range(0, rows, 32)]


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["y"], {"x": x})[0])


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("gemm", [False, True], ids=["matmul-add", "gemm-transB"])
def test_half_the_neurons_go_and_their_mean_moves_into_the_bias(gemm: bool) -> None:
    model, feeds = _mlp(gemm=gemm), _feeds()
    (block,) = feed_forward_blocks(model)
    assert block.width == HIDDEN

    pruned, facts = prune_feed_forward(model, 0.5, feeds, "test rows")

    w, p = _weights(model), _weights(pruned)
    w1, w2 = (w["w1"].T, w["w2"].T) if gemm else (w["w1"], w["w2"])
    x = np.concatenate([f["x"] for f in feeds])
    hidden = np.maximum(x @ w1 + w["b1"], 0)
    scores = np.abs(hidden).max(axis=0) * np.linalg.norm(w2, axis=1)
    order = np.argsort(scores, kind="stable")
    keep, drop = np.sort(order[HIDDEN // 2 :]), order[: HIDDEN // 2]
    cut1 = p["w1"].T if gemm else p["w1"]
    np.testing.assert_array_equal(cut1, w1[:, keep])
    np.testing.assert_array_equal(p["b1"], w["b1"][keep])
    # the block's output: kept neurons exactly, removed ones by their mean
    expected = hidden[:, keep] @ w2[keep] + hidden[:, drop].mean(axis=0) @ w2[drop] + w["b2"]
    np.testing.assert_allclose(_run(pruned, x), expected, rtol=1e-4, atol=1e-4)
    assert facts["neurons"] == HIDDEN and facts["kept_neurons"] == HIDDEN // 2
    assert facts["parameters_removed"] == (IN + 1 + OUT) * HIDDEN // 2
    assert facts["calibration"] == "test rows, 256 rows"
    assert json.loads(json.dumps(facts)) == facts


def test_neurons_that_never_fire_go_first_and_change_nothing() -> None:
    model, feeds = _mlp(dead=16), _feeds()
    pruned, _ = prune_feed_forward(model, 0.25, feeds, "test rows")

    assert _weights(pruned)["w1"].shape == (IN, HIDDEN - 16)
    x = RNG.standard_normal((64, IN)).astype(np.float32)
    np.testing.assert_allclose(_run(pruned, x), _run(model, x), rtol=1e-5, atol=1e-5)


def test_a_hidden_tensor_read_elsewhere_is_not_a_block() -> None:
    model = _mlp(residual=True)
    assert feed_forward_blocks(model) == []
    with pytest.raises(PruningError, match="no feed-forward block to prune"):
        prune_feed_forward(model, 0.5, _feeds(), "test rows")


def test_an_mlp_without_a_bias_gets_one_for_the_mean() -> None:
    model, feeds = _mlp(), _feeds()
    graph = model.graph
    graph.node[-1].op_type = "Identity"  # drop b2: MatMul -> Identity
    del graph.node[-1].input[1]
    pruned, _ = prune_feed_forward(model, 0.5, feeds, "test rows")
    assert [n.op_type for n in pruned.graph.node].count("Add") == 2  # b1's, and the mean's

    w = _weights(model)
    x = np.concatenate([f["x"] for f in feeds])
    hidden = np.maximum(x @ w["w1"] + w["b1"], 0)
    order = np.argsort(np.abs(hidden).max(axis=0) * np.linalg.norm(w["w2"], axis=1), kind="stable")
    keep, drop = np.sort(order[HIDDEN // 2 :]), order[: HIDDEN // 2]
    expected = hidden[:, keep] @ w["w2"][keep] + hidden[:, drop].mean(axis=0) @ w["w2"][drop]
    np.testing.assert_allclose(_run(pruned, x), expected, rtol=1e-4, atol=1e-4)


def test_chained_blocks_without_biases_are_cut_consistently() -> None:
    """x -> W1 -> Relu -> W2 -> Relu -> W3: W2 narrows the first block and widens the second."""
    rng = np.random.default_rng(5)
    weights = {"w1": (IN, HIDDEN), "w2": (HIDDEN, HIDDEN), "w3": (HIDDEN, OUT)}
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["r1"]),
            helper.make_node("MatMul", ["r1", "w2"], ["h2"]),
            helper.make_node("Relu", ["h2"], ["r2"]),
            helper.make_node("MatMul", ["r2", "w3"], ["y"]),
        ],
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT])],
        [numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), k) for k, shape in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    assert len(feed_forward_blocks(model)) == 2

    pruned, facts = prune_feed_forward(model, 0.25, _feeds(), "test rows")

    assert _weights(pruned)["w2"].shape == (HIDDEN - 16, HIDDEN - 16)
    assert [b["kept"] for b in facts["blocks"]] == [HIDDEN - 16, HIDDEN - 16]
    x = RNG.standard_normal((32, IN)).astype(np.float32)
    assert _run(pruned, x).shape == (32, OUT)  # onnxruntime runs it: the shapes agree


def test_a_scaled_gemm_or_a_tied_weight_is_not_a_block() -> None:
    model = _mlp(gemm=True)
    model.graph.node[2].attribute.append(helper.make_attribute("alpha", 0.5))
    assert feed_forward_blocks(model) == []
    square = _mlp()
    for node in square.graph.node:
        if node.op_type == "MatMul":
            node.input[1] = "w"
    square.graph.initializer.append(numpy_helper.from_array(np.eye(IN, dtype=np.float32), "w"))
    assert feed_forward_blocks(square) == []


def test_a_fraction_too_small_to_remove_a_neuron_is_refused() -> None:
    with pytest.raises(PruningError, match=r"--prune 0\.001 removes no neuron from blocks of 64"):
        prune_feed_forward(_mlp(), 0.001, _feeds(), "test rows")


def test_padded_tokens_do_not_count_in_a_neuron_s_score() -> None:
    """A neuron that fires only on padding scores as if it never fired."""
    model = _mlp()
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", IN]))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", OUT]))
    (block,) = feed_forward_blocks(model)
    x = RNG.standard_normal((4, 6, IN)).astype(np.float32)
    mask = np.ones((4, 6), np.int64)
    mask[:, 4:] = 0
    padded = x.copy()
    padded[:, 4:] *= 100.0  # huge activations on padded positions only
    (plain, _), (with_padding, _) = (
        neuron_scores(model, [block], [{"x": x, "attention_mask": mask}])[block.hidden],
        neuron_scores(model, [block], [{"x": padded, "attention_mask": mask}])[block.hidden],
    )
    np.testing.assert_allclose(with_padding, plain, rtol=1e-6)


def test_wide_blocks_keep_a_multiple_of_32() -> None:
    assert kept_neurons(1536, 0.1) == 1376 and kept_neurons(1536, 0.02) == 1504
    assert kept_neurons(1536, 0.99) == 32 and kept_neurons(1536, 0.01) == 1536
    assert kept_neurons(64, 0.25) == 48 and kept_neurons(4, 0.9) == 1


def test_minilm_sized_blocks_are_found_in_a_bert_graph(tmp_path: Path) -> None:
    from onnxfn.prepare.bert import build_bert_encoder
    from tests.prepare.test_add import _tiny_bert

    model = build_bert_encoder(_tiny_bert(tmp_path / "bert"))
    blocks = feed_forward_blocks(model)
    # each layer's FFN (Add bias, then GELU written out as Div, Erf, Add, Mul, Mul), not attention
    assert [(b.first, b.width) for b in blocks] == [
        ("/encoder/layer.0/intermediate/dense/MatMul", 64),
        ("/encoder/layer.1/intermediate/dense/MatMul", 64),
    ]
    assert all(b.bias and b.bias.endswith("output.dense.bias") for b in blocks)


def test_add_writes_the_pruned_model_and_its_facts(tmp_path: Path) -> None:
    onnx.save(_mlp(dead=16), str(tmp_path / "mlp.onnx"))
    np.save(tmp_path / "rows.npy", RNG.standard_normal((128, IN)).astype(np.float32))
    root = tmp_path / "artifacts"
    args = ["--root", str(root), "add", str(tmp_path / "mlp.onnx"), "--name", "mlp", "--no-fit"]
    assert main([*args, "--samples", str(tmp_path / "rows.npy"), "--prune", "0.25", "--quantize", "none"]) == 0

    manifest = Manifest.load(root / "mlp" / "manifest.json")
    assert manifest.pruning is not None and manifest.pruning["fraction"] == 0.25
    assert manifest.pruning["blocks"][0]["neurons"] == HIDDEN and manifest.pruning["kept_neurons"] == HIDDEN - 16
    assert manifest.pruning["calibration"] == "the validation samples, 128 rows"
    assert manifest.validation is not None and manifest.validation["drift"]["max_rel_error"] < 1e-4
    assert manifest.validation["original_bytes"] > manifest.validation["prepared_bytes"]
    shapes = sorted(tuple(t.dims) for t in onnx.load(str(root / "mlp" / "model.onnx")).graph.initializer)
    assert (IN, HIDDEN - 16) in shapes and (HIDDEN - 16, OUT) in shapes
    assert json.loads((root / "mlp" / "manifest.json").read_text())["pruning"]["parameters_removed"] == 16 * (
        IN + 1 + OUT
    )


def test_the_gate_refuses_pruning_that_costs_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    features, labels = load_digits(return_X_y=True)
    clf = MLPClassifier(hidden_layer_sizes=(256,), max_iter=300, random_state=0).fit(
        features[:1200] / 16, labels[:1200]
    )
    joblib.dump(clf, tmp_path / "mlp.joblib")
    np.save(tmp_path / "rows.npy", (features[1200:] / 16).astype(np.float32))
    root = tmp_path / "artifacts"
    args = ["--root", str(root), "add", str(tmp_path / "mlp.joblib"), "--name", "mlp", "--trust-pickle", "--no-fit"]
    # measured: half of this network's 256 neurons cost 3% of its labels and 0.5 of a probability
    assert main([*args, "--samples", str(tmp_path / "rows.npy"), "--prune", "0.5", "--quantize", "none"]) == 1
    assert "validation gate failed, nothing written" in capsys.readouterr().err
    assert list(root.iterdir()) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--prune", "1.5"), "--prune 1.5: expected a fraction of the neurons, above 0 and below 1"),
        (("--prune", "0"), "--prune 0: expected a fraction"),
        (("--prune-heads", "1"), "--prune-heads 1: expected a fraction of the heads, above 0 and below 1"),
    ],
)
def test_bad_fractions_are_refused_and_nothing_is_written(tmp_path, capsys, flags, message) -> None:
    onnx.save(_mlp(), str(tmp_path / "mlp.onnx"))
    root = tmp_path / "artifacts"
    assert main(["--root", str(root), "add", str(tmp_path / "mlp.onnx"), "--name", "m", "--no-fit", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not root.exists() or list(root.iterdir()) == []


def test_a_graph_without_blocks_says_so(tmp_path, capsys) -> None:
    onnx.save(_mlp(residual=True), str(tmp_path / "mlp.onnx"))
    root = tmp_path / "artifacts"
    assert (
        main(["--root", str(root), "add", str(tmp_path / "mlp.onnx"), "--name", "m", "--no-fit", "--prune", "0.5"]) == 2
    )
    assert "no feed-forward block to prune" in capsys.readouterr().err
    assert list(root.iterdir()) == []


def _bert_and_feeds(tmp_path: Path) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    from onnxfn.prepare.bert import build_bert_encoder
    from tests.prepare.test_add import _tiny_bert

    model = build_bert_encoder(_tiny_bert(tmp_path / "bert"))
    rng = np.random.default_rng(2)
    feeds = []
    for _ in range(4):
        ids = rng.integers(1000, 5000, (4, 12)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[2:, 9:] = 0
        feeds.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return model, feeds


def _hidden(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["last_hidden_state"], feed)[0])


def test_a_head_goes_whole_and_its_mean_moves_into_the_output_bias(tmp_path: Path) -> None:
    from onnxfn.prepare.attention_blocks import attention_blocks

    model, feeds = _bert_and_feeds(tmp_path)
    blocks = attention_blocks(model)
    assert [(b.second, b.width, b.group) for b in blocks] == [
        ("/encoder/layer.0/attention/output/dense/MatMul", 32, 16),
        ("/encoder/layer.1/attention/output/dense/MatMul", 32, 16),
    ]

    pruned, facts = prune_feed_forward(model, None, feeds, "test rows", heads=0.5)

    assert facts["heads"]["heads"] == 4 and facts["heads"]["kept_heads"] == 2 and "blocks" not in facts
    weights = _weights(pruned)
    assert weights["encoder.layer.0.attention.self.query.weight"].shape == (32, 16)
    assert weights["encoder.layer.1.attention.output.dense.weight"].shape == (16, 32)
    assert "shape_to_heads" not in weights  # the shared shape, replaced in every layer
    # The same model with the dropped head's output rows zeroed and its mean folded in: the same outputs.
    stats = neuron_scores(model, blocks, feeds)
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    index = {t.name: i for i, t in enumerate(expected.graph.initializer)}
    for block in blocks:
        scores, means = stats[block.hidden]
        drop = np.arange(16) + 16 * int(np.argmin(scores.reshape(2, 16).sum(axis=1)))
        wo = numpy_helper.to_array(expected.graph.initializer[index[block.outgoing[0]]]).copy()
        assert block.bias is not None
        bias = numpy_helper.to_array(expected.graph.initializer[index[block.bias]]) + means[drop] @ wo[drop]
        wo[drop] = 0
        expected.graph.initializer[index[block.outgoing[0]]].CopyFrom(numpy_helper.from_array(wo, block.outgoing[0]))
        expected.graph.initializer[index[block.bias]].CopyFrom(
            numpy_helper.from_array(bias.astype(np.float32), block.bias)
        )
    np.testing.assert_allclose(_hidden(pruned, feeds[0]), _hidden(expected, feeds[0]), rtol=1e-3, atol=1e-4)


def test_heads_and_neurons_together_through_add(tmp_path: Path) -> None:
    from tests.prepare.test_add import _tiny_bert

    root = tmp_path / "artifacts"
    args = ["--root", str(root), "add", str(_tiny_bert(tmp_path / "bert")), "--name", "tiny", "--no-fit"]
    loose = ["--min-cosine-min", "0", "--min-cosine-mean", "0"]  # random weights: the gate is not the point here
    assert main([*args, "--prune", "0.25", "--prune-heads", "0.5", *loose]) == 0
    pruning = Manifest.load(root / "tiny" / "manifest.json").pruning
    assert pruning is not None and pruning["kept_neurons"] == 96 and pruning["heads"]["kept_heads"] == 2


def test_a_graph_without_attention_blocks_says_so() -> None:
    with pytest.raises(PruningError, match="--prune-heads: this graph has no attention block"):
        prune_feed_forward(_mlp(), None, _feeds(), "test rows", heads=0.5)

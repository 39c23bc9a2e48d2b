"""--quantize auto chooses from what the graph holds, and says why when it quantizes nothing."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxfn.prepare.recipes import choose, explain_zero


def _graph(op: str, weight_shape: tuple[int, ...], x_shape: list) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones(weight_shape, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"], name=f"/{op}")],
        op.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_each_kind_of_weight_gets_its_recipe():
    conv = choose(_graph("Conv", (4, 3, 3, 3), [1, 3, 8, 8]))
    assert conv.mode == "static" and conv.op_types == ("Conv",) and "1 Conv" in conv.reason
    gemm = choose(_graph("Gemm", (8, 4), ["n", 8]))
    assert gemm.mode == "static" and gemm.op_types == ("Gemm",)
    matmul = choose(_graph("MatMul", (8, 4), ["n", 8]))
    assert matmul.mode == "dynamic" and matmul.op_types == ("MatMul",)
    assert "dynamic mode quantizes MatMul weights only" in explain_zero("dynamic", _graph("Gemm", (8, 4), ["n", 8]))


def test_a_tree_ensemble_is_left_as_it_is_with_the_reason():
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_iris(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(x, y)
    model = to_onnx(forest, x[:1].astype(np.float32), options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    recipe = choose(model)
    assert recipe.mode == "none" and "TreeEnsemble" in recipe.reason and "no int8 kernels" in recipe.reason


def test_an_already_quantized_graph_is_left_as_it_is():
    model = _graph("MatMul", (8, 4), ["n", 8])
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s")
    model.graph.initializer.append(scale)
    model.graph.node.insert(0, helper.make_node("QuantizeLinear", ["x", "s"], ["q"]))
    recipe = choose(model)
    assert recipe.mode == "none" and recipe.reason == "already quantized (1 int8 nodes in the graph)"


def test_weights_inside_control_flow_are_named_as_the_reason_nothing_was_quantized():
    """silero-vad keeps its LSTM and convolutions inside If branches (one per sample rate)."""
    inner = _graph("MatMul", (8, 4), ["n", 8]).graph
    then_branch = helper.make_graph(list(inner.node), "then", [], list(inner.output), list(inner.initializer))
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "else",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["out"], then_branch=then_branch, else_branch=else_branch)],
        "branches",
        [
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
    )
    recipe = choose(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert recipe.mode == "none" and "1 MatMul" in recipe.reason and "control-flow subgraphs" in recipe.reason

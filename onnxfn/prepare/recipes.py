"""Which quantization a model gets by default, and why, from what its graph holds.

``--quantize auto`` (the default) looks at the weights: a BERT-family encoder's MatMuls get 8-bit
weight blocks with int8 activations per block (``blockwise``) and int8 embedding rows, measured to
keep its accuracy at about a quarter of its size (docs/add.md); other MatMuls get dynamic int8
(weights int8, activations quantized per call, no data needed); Conv or Gemm weights get static QDQ int8 with
activation scales calibrated on the validation samples (onnxruntime's dynamic mode has no Gemm and
runs Conv as a slow ConvInteger); a graph with none of them (a tree ensemble, a linear model in
``ai.onnx.ml`` ops) or one already quantized is left as it is, with the reason recorded. The
validation gate still decides whether the result ships.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import onnx
from onnx import TensorProto

from onnxfn.prepare import blockwise
from onnxfn.prepare.blockwise import BlockOptions
from onnxfn.prepare.graph_walk import nested_nodes

MATMUL_OPS = ("MatMul",)
STATIC_OPS = ("MatMul", "Gemm", "Conv")
# Nodes that mean a graph is already quantized.
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "MatMulNBits",
        "GatherBlockQuantized",
    }
)


@dataclass(frozen=True)
class Recipe:
    """The mode ``quantize`` runs, the op types it touches, and the sentence the manifest keeps."""

    mode: str
    op_types: tuple[str, ...]
    reason: str


def weight_ops(model: onnx.ModelProto) -> Counter[str]:
    """MatMul, Gemm and Conv nodes whose weight (second input) is a float initializer."""
    weights = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    return Counter(
        node.op_type
        for node in model.graph.node
        if node.op_type in STATIC_OPS
        and node.domain in ("", "ai.onnx")
        and node.input[1:2]
        and node.input[1] in weights
    )


def choose(model: onnx.ModelProto, kind: str = "", block: BlockOptions | None = None) -> Recipe:
    """The default recipe for ``model`` of source ``kind`` (see the module's docstring); ``block``:
    the block flags given, which a BERT checkpoint's recipe takes."""
    ops = Counter(node.op_type for node in model.graph.node)
    already = sum(count for op, count in ops.items() if op in QUANTIZED_OPS)
    if already:
        return Recipe("none", (), f"already quantized ({already} int8 nodes in the graph)")
    weights = weight_ops(model)
    if weights["Conv"] or weights["Gemm"]:
        held = ", ".join(f"{weights[op]} {op}" for op in STATIC_OPS if weights[op])
        return Recipe(
            "static",
            tuple(op for op in STATIC_OPS if weights[op]),
            f"static QDQ int8 for the weights of {held}, activation scales calibrated on the validation samples",
        )
    if weights["MatMul"] and kind == "bert":
        return Recipe("blockwise", MATMUL_OPS, blockwise.reason(block or BlockOptions(), weights["MatMul"]))
    if weights["MatMul"]:
        return Recipe("dynamic", MATMUL_OPS, f"dynamic int8 for the weights of {weights['MatMul']} MatMul")
    common = ", ".join(op for op, _ in ops.most_common(3)) or "no nodes"
    nested = Counter(n.op_type for n in nested_nodes(model.graph) if n.op_type in STATIC_OPS)
    if nested:
        held = ", ".join(f"{count} {op}" for op, count in sorted(nested.items()))
        return Recipe(
            "none",
            (),
            f"nothing quantized: the weights ({held}) sit inside control-flow subgraphs (If, Loop, Scan), "
            f"which the default recipes leave as they are (the top-level graph holds {common})",
        )
    return Recipe(
        "none",
        (),
        f"nothing to quantize: no MatMul, Gemm or Conv with constant weights (the graph holds {common}), "
        "and onnxruntime has no int8 kernels for those",
    )


def explain_zero(mode: str, model: onnx.ModelProto) -> str:
    """Why an explicitly chosen int8 or block mode changed no node."""
    weights = weight_ops(model)
    if mode in ("dynamic", "blockwise") and (weights["Conv"] or weights["Gemm"]):
        takes = "MatMul weights only" if mode == "dynamic" else "MatMul weights and embedding tables only"
        return f"{mode} mode quantizes {takes}; this graph's are in Gemm or Conv: --quantize auto or static"
    return choose(model).reason if choose(model).mode == "none" else "no node the mode quantizes"

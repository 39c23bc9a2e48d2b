"""Feed-forward blocks of an ONNX graph: what ``onnxfn add --prune`` can remove neurons from.

A feed-forward block is a weight op that widens (MatMul or Gemm with a constant weight), an
optional bias and an elementwise activation (Relu, GELU written out as Erf, ...), and a weight op
that narrows again: a transformer's FFN, or two layers of an MLP. Each hidden neuron is one column
of the first weight, its entry in the bias and one row of the second weight, and nothing else
reads it. ``feed_forward_blocks`` finds them and says what to cut; ``pruning`` ranks and cuts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from onnxfn.prepare.fp16 import op_domain
from onnxfn.prepare.graph_walk import GraphIndex

# Ops whose output column j depends only on column j of their inputs.
ELEMENTWISE_UNARY = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Gelu",
        "FastGelu",
        "QuickGelu",
        "Erf",
        "Tanh",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Elu",
        "Selu",
        "Celu",
        "Softplus",
        "Softsign",
        "Mish",
        "Exp",
        "Sqrt",
        "Abs",
        "Neg",
        "Identity",
        "Clip",
    }
)
ELEMENTWISE_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow"})
WEIGHT_OPS = frozenset({"MatMul", "Gemm"})


@dataclass(frozen=True)
class FeedForward:
    """One prunable block: its two weight ops, the tensor of hidden activations the second reads,
    the number of neurons, and every constant to cut (initializer name -> the axis that counts neurons)."""

    first: str
    second: str
    hidden: str
    width: int
    cuts: tuple[tuple[str, int], ...]
    outgoing: tuple[str, int]  # the second weight and its neuron axis
    tensors: tuple[str, ...]  # tensors whose shape changes: their recorded shapes are dropped
    bias: str | None  # the constant bias of the second op, or None: an Add is inserted for the mean
    group: int = 1  # neurons go in groups of this many (an attention head's columns)
    reshapes: tuple[tuple[str, int, int], ...] = ()  # Reshape node, dim of its shape, neurons per group there


def feed_forward_blocks(model: onnx.ModelProto) -> list[FeedForward]:
    """The feed-forward blocks of ``model``'s main graph that can lose neurons, in graph order."""
    g = GraphIndex(model)
    scalars = {n.output[0] for n in model.graph.node if n.op_type == "Constant" and _constant_size(n) <= 1}
    blocks = []
    for node in model.graph.node:
        block = _block_ending_at(node, g.constants, scalars, g.producers, g.consumers, g.outside)
        if block is not None:
            blocks.append(block)
    return blocks


def _constant_size(node: onnx.NodeProto) -> int:
    for attribute in node.attribute:
        if attribute.name == "value":
            return int(np.prod(attribute.t.dims)) if attribute.t.dims else 1
        if attribute.name in ("value_float", "value_int"):
            return 1
    return 2


def _weight_axis(node: onnx.NodeProto, constants: dict[str, TensorProto], *, incoming: bool) -> int | None:
    """The axis of ``node``'s constant 2-D fp32 weight that counts its outputs (``incoming`` False:
    the neurons a widening op makes) or its inputs (``incoming`` True: the neurons a narrowing op
    reads); ``None`` when ``node`` is not a weight op this can cut."""
    if node.op_type not in WEIGHT_OPS or op_domain(node) != "" or len(node.input) < 2:
        return None
    weight = constants.get(node.input[1])
    if weight is None or weight.data_type != TensorProto.FLOAT or len(weight.dims) != 2:
        return None
    attributes = {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}
    scales = {a.name: a.f for a in node.attribute if a.type == onnx.AttributeProto.FLOAT}
    if attributes.get("transA", 0) or scales.get("alpha", 1.0) != 1.0 or scales.get("beta", 1.0) != 1.0:
        return None  # a scaled Gemm: the folded mean would need the same scaling
    transposed = node.op_type == "Gemm" and attributes.get("transB", 0) == 1
    # MatMul and Gemm take W as [in, out]; Gemm with transB=1 as [out, in].
    return (1 if transposed else 0) if incoming else (0 if transposed else 1)


def _block_ending_at(
    second: onnx.NodeProto,
    constants: dict[str, TensorProto],
    scalars: set[str],
    producers: dict[str, onnx.NodeProto],
    consumers: dict[str, list[onnx.NodeProto]],
    outputs: set[str],
) -> FeedForward | None:
    """The block whose narrowing op is ``second``, walking back from its input through elementwise
    ops to one widening weight op; ``None`` when the way back holds anything else."""
    in_axis = _weight_axis(second, constants, incoming=True)
    if in_axis is None:
        return None
    region: list[onnx.NodeProto] = []
    seen: set[str] = set()
    stack = [second.input[0]]
    head: onnx.NodeProto | None = None
    while stack:
        tensor = stack.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        node = producers.get(tensor)
        if node is None or tensor in outputs:
            return None
        if _weight_axis(node, constants, incoming=False) is not None:
            if head is not None and head is not node:
                return None
            head = node
            continue
        if op_domain(node) not in ("", "com.microsoft"):
            return None
        varying = [name for name in node.input if name and name not in constants and name not in scalars]
        if (node.op_type in ELEMENTWISE_UNARY and len(varying) == 1 and varying[0] == node.input[0]) or (
            node.op_type in ELEMENTWISE_BINARY and varying
        ):
            pass
        else:
            return None
        if node not in region:
            region.append(node)
        stack.extend(varying)
    if head is None or head.input[1] == second.input[1]:
        return None  # no widening op, or one weight tied to both ends
    width = _dims(constants[head.input[1]])[_weight_axis(head, constants, incoming=False) or 0]
    if _dims(constants[second.input[1]])[in_axis] != width:
        return None
    members = {id(n) for n in region} | {id(second)}
    if any(id(c) not in members for t in seen for c in consumers[t]):
        return None  # a hidden tensor is read outside the block (a residual, an output)
    cuts: list[tuple[str, int]] = [(head.input[1], _weight_axis(head, constants, incoming=False) or 0)]
    vectors = [head.input[2]] if head.op_type == "Gemm" and len(head.input) > 2 and head.input[2] else []
    vectors += [name for node in region for name in node.input if name in constants]
    for name in dict.fromkeys(vectors):
        if name not in constants:
            return None  # a Gemm bias computed at run time
        dims = _dims(constants[name])
        size = int(np.prod(dims)) if dims else 1
        if size == 1:
            continue  # a scalar applies to every neuron alike
        if dims[-1] != width or size != width:
            return None
        cuts.append((name, -1))
    cuts.append((second.input[1], in_axis))
    allowed = members | {id(head)}
    for name, _ in cuts:
        if name in outputs or any(id(c) not in allowed for c in consumers[name]):
            return None  # a weight shared with another node (or a subgraph) would be cut under it
    return FeedForward(
        first=head.name,
        second=second.name,
        hidden=second.input[0],
        width=width,
        cuts=tuple(cuts),
        outgoing=(second.input[1], in_axis),
        tensors=tuple(sorted(seen | set(head.output))),
        bias=output_bias(second, constants, consumers, 1 - in_axis),
    )


def output_bias(
    second: onnx.NodeProto,
    constants: dict[str, TensorProto],
    consumers: dict[str, list[onnx.NodeProto]],
    out_axis: int,
) -> str | None:
    """The constant vector added to ``second``'s output (Gemm's C, or the one Add reading a MatMul),
    when nothing else reads it."""
    width = _dims(constants[second.input[1]])[out_axis]
    if second.op_type == "Gemm":
        candidates = [second.input[2]] if len(second.input) > 2 and second.input[2] else []
        users = [second]
    else:
        readers = consumers[second.output[0]]
        if len(readers) != 1 or readers[0].op_type != "Add":
            return None
        candidates = [name for name in readers[0].input if name in constants]
        users = readers
    for name in candidates:
        dims = _dims(constants.get(name, TensorProto()))
        fits = name in constants and dims and dims[-1] == width and int(np.prod(dims)) == width
        if fits and all(reader in users for reader in consumers[name]):
            return str(name)
    return None


def _dims(tensor: TensorProto) -> list[int]:
    return list(tensor.dims)

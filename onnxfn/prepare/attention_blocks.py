"""Self-attention blocks of an ONNX graph: what ``onnxfn add --prune-heads`` can remove heads from.

The block is the one written with constant shapes, as ``onnxfn.prepare.bert`` writes BERT
checkpoints (exports that compute their shapes at run time are not recognised): Q, K and V
projections (a MatMul with a constant weight, an optional bias), each reshaped to
``[.., heads, size]`` and transposed; ``softmax(Q·Kᵀ ...)·V``; transposed back, reshaped to
``[.., heads × size]`` and projected by the output MatMul. A head is ``size`` columns of each
projection (and of its bias) and ``size`` rows of the output weight, so removing it leaves a
smaller dense block once the four Reshapes are told the new head count.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from onnxfn.prepare.ffn_blocks import FeedForward, output_bias
from onnxfn.prepare.fp16 import op_domain
from onnxfn.prepare.graph_walk import GraphIndex

# Between Q·Kᵀ and the softmax's output: scaling, the mask, the softmax itself.
_SCORE_OPS = frozenset({"Softmax", "Add", "Sub", "Mul", "Div", "Where", "Cast"})
_TO_HEADS, _K_TO_HEADS = [0, 2, 1, 3], [0, 2, 3, 1]


class _Graph(GraphIndex):
    """The index, with the lookups an attention block needs: typed producers, shapes, weights."""

    def made_by(self, tensor: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producers.get(tensor)
        return node if node is not None and node.op_type == op_type and op_domain(node) == "" else None

    def shape(self, node: onnx.NodeProto) -> list[int] | None:
        """The constant target shape of a Reshape."""
        tensor = self.constants.get(node.input[1]) if len(node.input) > 1 else None
        return None if tensor is None else [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]

    def perm(self, node: onnx.NodeProto) -> list[int]:
        return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])

    def weight(self, node: onnx.NodeProto) -> TensorProto | None:
        tensor = self.constants.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        ok = tensor is not None and tensor.data_type == TensorProto.FLOAT and len(tensor.dims) == 2
        return tensor if ok else None


def attention_blocks(model: onnx.ModelProto) -> list[FeedForward]:
    """The self-attention blocks of ``model``'s main graph whose heads can be removed, in graph order.

    Each is a ``FeedForward`` whose neurons are the columns of the heads (``group`` = head size)."""
    g = _Graph(model)
    blocks = []
    for node in model.graph.node:
        block = _block_at_output(g, node)
        if block is not None:
            blocks.append(block)
    return blocks


def _projection(g: _Graph, tensor: str, width: int) -> tuple[onnx.NodeProto, list[onnx.NodeProto], list[str]] | None:
    """The MatMul (and bias Add) producing ``tensor`` from a constant ``[in, width]`` weight: the
    MatMul, the nodes, and the constants to cut along their last axis."""
    add = g.made_by(tensor, "Add")
    nodes: list[onnx.NodeProto] = []
    cuts: list[str] = []
    if add is not None:
        biases = [name for name in add.input if name in g.constants]
        varying = [name for name in add.input if name not in g.constants]
        if len(biases) != 1 or len(varying) != 1 or list(g.constants[biases[0]].dims) != [width]:
            return None
        nodes, cuts, tensor = [add], [biases[0]], varying[0]
    matmul = g.made_by(tensor, "MatMul")
    weight = g.weight(matmul) if matmul is not None else None
    if matmul is None or weight is None or weight.dims[1] != width:
        return None
    return matmul, [matmul, *nodes], [matmul.input[1], *cuts]


def _heads_path(
    g: _Graph, tensor: str, perm: list[int]
) -> tuple[onnx.NodeProto, list[int], list[onnx.NodeProto], list[str]] | None:
    """Transpose(``perm``) of a Reshape to ``[.., heads, size]`` of a projection."""
    transpose = g.made_by(tensor, "Transpose")
    reshape = g.made_by(transpose.input[0], "Reshape") if transpose is not None else None
    if transpose is None or reshape is None or g.perm(transpose) != perm:
        return None
    shape = g.shape(reshape)
    if shape is None or len(shape) != 4 or min(shape[2:]) < 1:
        return None
    found = _projection(g, reshape.input[0], shape[2] * shape[3])
    if found is None:
        return None
    _, nodes, cuts = found
    return reshape, shape, [*nodes, reshape, transpose], cuts


def _scores(g: _Graph, tensor: str, depth: int = 8) -> list[onnx.NodeProto] | None:
    """The Q·Kᵀ MatMul behind the attention probabilities ``tensor``, then the nodes after it."""
    node = g.producers.get(tensor)
    if node is None or depth == 0 or op_domain(node) != "":
        return None
    if node.op_type == "MatMul" and not any(name in g.constants for name in node.input):
        return [node]
    if node.op_type not in _SCORE_OPS:
        return None
    for name in node.input:
        if name and name not in g.constants:
            found = _scores(g, name, depth - 1)
            if found is not None:
                return [*found, node]
    return None


def _block_at_output(g: _Graph, output: onnx.NodeProto) -> FeedForward | None:
    weight = g.weight(output)
    merge = g.made_by(output.input[0], "Reshape") if weight is not None else None
    back = g.made_by(merge.input[0], "Transpose") if merge is not None else None
    context = g.made_by(back.input[0], "MatMul") if back is not None else None
    if weight is None or merge is None or back is None or context is None or g.perm(back) != _TO_HEADS:
        return None
    width = int(weight.dims[0])
    merged = g.shape(merge)
    value = _heads_path(g, context.input[1], _TO_HEADS)
    chain = _scores(g, context.input[0])
    if merged is None or merged[-1] != width or value is None or chain is None:
        return None
    scores = chain[0]
    query = _heads_path(g, scores.input[0], _TO_HEADS)
    key = _heads_path(g, scores.input[1], _K_TO_HEADS)
    if query is None or key is None:
        return None
    shapes = {tuple(path[1][2:]) for path in (query, key, value)}
    if len(shapes) != 1:
        return None
    heads, size = next(iter(shapes))
    if heads * size != width or heads < 2:
        return None
    nodes = [n for path in (query, key, value) for n in path[2]] + [context, back, merge]
    cuts = [(name, 1 if i == 0 else -1) for path in (query, key, value) for i, name in enumerate(path[3])]
    cuts.append((output.input[1], 0))
    members = {id(n) for n in [*nodes, *chain, output]}
    # The heads' tensors are read inside the block only, and each weight by its own op only.
    inside = [out for n in nodes for out in n.output]
    if any(t in g.outside or any(id(c) not in members for c in g.consumers[t]) for t in inside):
        return None
    if any(len(g.consumers[name]) != 1 for name, _ in cuts):
        return None
    tensors = {out for n in [*nodes, *chain] for out in n.output}
    reshapes = (*((path[0].name, 2, 1) for path in (query, key, value)), (merge.name, len(merged) - 1, size))
    return FeedForward(
        first=query[2][0].name,
        second=output.name,
        hidden=output.input[0],
        width=width,
        cuts=tuple(cuts),
        outgoing=(output.input[1], 0),
        tensors=tuple(sorted(tensors)),
        bias=output_bias(output, g.constants, g.consumers, 1),
        group=size,
        reshapes=reshapes,
    )


def set_heads(graph: onnx.GraphProto, block: FeedForward, kept_groups: int) -> set[str]:
    """Point the block's Reshapes at new shapes of ``kept_groups`` heads (shapes are often shared by
    every layer); return the names of the shapes they read before."""
    nodes = {node.name: node for node in graph.node}
    shapes = {t.name: t for t in graph.initializer}
    before = set()
    for name, position, per in block.reshapes:
        node = nodes[name]
        shape = numpy_helper.to_array(shapes[node.input[1]]).copy()
        shape[position] = kept_groups * per
        new = f"{name}/pruned_shape"
        graph.initializer.append(numpy_helper.from_array(np.asarray(shape, dtype=np.int64), new))
        before.add(node.input[1])
        node.input[1] = new
    return before

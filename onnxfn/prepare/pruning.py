"""Structured pruning of feed-forward blocks: ``onnxfn add --prune FRACTION``.

A feed-forward block is a weight op that widens (MatMul or Gemm with a constant weight), an
optional bias and an elementwise activation (Relu, GELU written out as Erf, ...), and a weight op
that narrows again: a transformer's FFN, or two layers of an MLP. Each hidden neuron is one column
of the first weight, its entry in the bias and one row of the second weight, and nothing else
reads it, so removing whole neurons leaves a smaller dense graph that every kernel runs faster.
(Zeroing single weights, unstructured sparsity, buys nothing in onnxruntime's CPU kernels.)

A neuron's score is the peak absolute activation it reaches on the calibration samples (padded
tokens left out) times the L2 norm of its outgoing weights: the most it can add to the block's
output. Each block loses the same fraction of its neurons, the lowest scores first, and what a
removed neuron added on average (its mean activation times its outgoing weights) is folded into
the second op's bias, so the block's output keeps its mean. The validation gate then compares the
pruned, quantized model with the original, as for any other recipe.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from onnxfn.errors import UserError
from onnxfn.prepare.blockwise import name_nodes
from onnxfn.prepare.fp16 import op_domain

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
# Blocks at least this wide keep a multiple of 32 neurons: whole SIMD rows and quantization blocks.
ALIGN_FROM, ALIGN = 128, 32


class PruningError(UserError, ValueError):
    """``--prune`` cannot be applied; the message says why and what it needs."""


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


def feed_forward_blocks(model: onnx.ModelProto) -> list[FeedForward]:
    """The feed-forward blocks of ``model``'s main graph that can lose neurons, in graph order."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    scalars = {n.output[0] for n in graph.node if n.op_type == "Constant" and _constant_size(n) <= 1}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in graph.output} | _read_in_subgraphs(graph)
    blocks = []
    for node in graph.node:
        block = _block_ending_at(node, constants, scalars, producers, consumers, outputs)
        if block is not None:
            blocks.append(block)
    return blocks


def _read_in_subgraphs(graph: onnx.GraphProto) -> set[str]:
    """Names the bodies of If, Loop and Scan read from the enclosing graph (and anything they read):
    such a tensor or weight is read outside any block."""
    names: set[str] = set()
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs):
                names.update(name for inner in sub.node for name in inner.input)
                names |= _read_in_subgraphs(sub)
    return names


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
        bias=_output_bias(second, constants, consumers, 1 - in_axis),
    )


def _output_bias(
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


def neuron_scores(
    model: onnx.ModelProto, blocks: list[FeedForward], feeds: list[dict[str, np.ndarray]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each block's neuron scores and mean activations (keyed by its hidden tensor): the peak
    |activation| over the calibration rows, padded tokens excluded, times the L2 norm of the
    neuron's outgoing weights; and the mean activation over the same rows."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(b.hidden, TensorProto.FLOAT, None) for b in blocks if b.hidden not in known
    )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    names = [b.hidden for b in blocks]
    totals = {name: np.zeros(b.width, np.float64) for name, b in zip(names, blocks, strict=True)}
    peaks = {name: np.zeros(b.width, np.float64) for name, b in zip(names, blocks, strict=True)}
    counts = dict.fromkeys(names, 0.0)
    for feed in feeds:
        values = session.run(names, {k: v for k, v in feed.items() if k in inputs})
        mask = feed.get("attention_mask")
        for name, value in zip(names, values, strict=True):
            active = np.asarray(value, np.float64)
            rows = active.reshape(-1, active.shape[-1])
            if mask is not None and active.ndim == 3 and active.shape[:2] == mask.shape:
                rows = rows[mask.reshape(-1) != 0]  # padded tokens say nothing of the model
            totals[name] += rows.sum(axis=0)
            peaks[name] = np.maximum(peaks[name], np.abs(rows).max(axis=0, initial=0.0))
            counts[name] += rows.shape[0]
    weights_of = {t.name: t for t in model.graph.initializer}
    found = {}
    for block in blocks:
        outgoing = numpy_helper.to_array(weights_of[block.outgoing[0]])
        norms = np.linalg.norm(np.moveaxis(outgoing, block.outgoing[1], 0), axis=1)
        found[block.hidden] = (peaks[block.hidden] * norms, totals[block.hidden] / max(counts[block.hidden], 1.0))
    return found


def _fold_means(
    graph: onnx.GraphProto, index: dict[str, int], block: FeedForward, means: np.ndarray, drop: np.ndarray
) -> None:
    """Add what the ``drop`` neurons gave on average to the second op's output bias."""
    outgoing = numpy_helper.to_array(graph.initializer[index[block.outgoing[0]]]).astype(np.float64)
    rows = np.moveaxis(outgoing, block.outgoing[1], 0)[drop]
    shift = (means[drop] @ rows).astype(np.float32)
    if block.bias is not None:
        position = index[block.bias]
        bias = numpy_helper.to_array(graph.initializer[position])
        graph.initializer[position].CopyFrom(numpy_helper.from_array(bias + shift.reshape(bias.shape), block.bias))
        return
    node_index, node = next((i, n) for i, n in enumerate(graph.node) if n.name == block.second)
    name = f"{block.second}/pruned_mean"
    result = node.output[0]
    node.output[0] = f"{result}_before_pruned_mean"
    graph.initializer.append(numpy_helper.from_array(shift, name))
    index[name] = len(graph.initializer) - 1
    add = onnx.helper.make_node("Add", [node.output[0], name], [result], name=f"{block.second}/PrunedMean")
    graph.node.insert(node_index + 1, add)


def _check_loads(model: onnx.ModelProto) -> None:
    import onnxruntime as ort

    try:
        onnx.checker.check_model(model)
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise PruningError(
            f"--prune: the pruned graph does not load in onnxruntime ({first}); prune without it"
        ) from exc


def kept_neurons(width: int, fraction: float) -> int:
    """How many of ``width`` neurons stay at ``fraction`` pruned (wide blocks keep a multiple of 32)."""
    kept = width - round(width * fraction)
    if width >= ALIGN_FROM:
        return min(width, max(ALIGN, round(kept / ALIGN) * ALIGN))
    return min(width, max(1, kept))


def prune_feed_forward(
    model: onnx.ModelProto, fraction: float, feeds: list[dict[str, np.ndarray]], calibration: str
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """A copy of ``model`` with ``fraction`` of every feed-forward block's neurons removed, and the
    facts the manifest records. ``calibration`` says where ``feeds`` came from."""
    if not 0 < fraction < 1:
        raise PruningError(f"--prune {fraction:g}: expected a fraction of the neurons, above 0 and below 1")
    if not feeds:
        raise PruningError("--prune needs calibration samples to rank neurons by; give --calibration FILE")
    named = onnx.ModelProto()
    named.CopyFrom(model)
    name_nodes(named)  # blocks are found and edited by node name
    model = named
    blocks = feed_forward_blocks(model)
    if not blocks:
        raise PruningError(
            "--prune: this graph has no feed-forward block to prune (a MatMul or Gemm with a constant weight, "
            "an elementwise activation, and a second such op reading only it)"
        )
    stats = neuron_scores(model, blocks, feeds)
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    graph = pruned.graph
    index = {t.name: i for i, t in enumerate(graph.initializer)}
    described: list[dict[str, Any]] = []
    removed = 0
    # Last block first: when one block's narrowing op widens the next, the next block's cuts are
    # made before this block folds its means into (or after) that op, so the shapes agree.
    for block in reversed(blocks):
        scores, means = stats[block.hidden]
        kept = kept_neurons(block.width, fraction)
        order = np.argsort(scores, kind="stable")
        keep, drop = np.sort(order[block.width - kept :]), order[: block.width - kept]
        _fold_means(graph, index, block, means, drop)
        for name, axis in block.cuts:
            position = index[name]
            array = numpy_helper.to_array(graph.initializer[position])
            cut = np.take(array, keep, axis=axis)
            removed += array.size - cut.size
            graph.initializer[position].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(cut), name))
        described.insert(0, {"first": block.first, "second": block.second, "neurons": block.width, "kept": kept})
    if all(b["kept"] == b["neurons"] for b in described):
        widths = sorted({b["neurons"] for b in described})
        raise PruningError(
            f"--prune {fraction:g} removes no neuron from blocks of {', '.join(map(str, widths))} "
            f"(blocks of {ALIGN_FROM} or more lose {ALIGN} at a time): give a larger fraction"
        )
    cut_names = {name for block in blocks for name, _ in block.cuts}
    for position, entry in enumerate(graph.input):
        if entry.name in cut_names:  # an initializer listed as an input (IR < 4): its shape changed
            dims = list(graph.initializer[index[entry.name]].dims)
            graph.input[position].CopyFrom(onnx.helper.make_tensor_value_info(entry.name, TensorProto.FLOAT, dims))
    changed = {t for block in blocks for t in block.tensors}
    kept_info = [v for v in graph.value_info if v.name not in changed]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    _check_loads(pruned)
    rows = sum(len(next(iter(feed.values()))) for feed in feeds)
    total = sum(int(b["neurons"]) for b in described)
    facts = {
        "fraction": fraction,
        "what": "feed-forward neurons (whole columns of the first weight, rows of the second)",
        "score": "peak |activation| on the calibration rows × L2 norm of the neuron's outgoing weights",
        "compensation": "each removed neuron's mean activation × its outgoing weights, added to the block's bias",
        "calibration": f"{calibration}, {rows} rows",
        "blocks": described,
        "neurons": total,
        "kept_neurons": sum(int(b["kept"]) for b in described),
        "parameters_removed": removed,
    }
    return pruned, facts

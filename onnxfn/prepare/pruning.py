"""Structured pruning of feed-forward blocks: ``onnxfn add --prune FRACTION``.

Which blocks qualify, and what a neuron is in each, is ``onnxfn.prepare.ffn_blocks``. Removing whole
neurons leaves a smaller dense graph that every kernel runs faster. (Zeroing single weights,
unstructured sparsity, buys nothing in onnxruntime's CPU kernels.)

A neuron's score is the peak absolute activation it reaches on the calibration samples (padded
tokens left out) times the L2 norm of its outgoing weights: the most it can add to the block's
output. Each block loses the same fraction of its neurons, the lowest scores first, and what a
removed neuron added on average (its mean activation times its outgoing weights) is folded into
the second op's bias, so the block's output keeps its mean. The validation gate then compares the
pruned, quantized model with the original, as for any other recipe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from onnxfn.errors import UserError
from onnxfn.prepare.attention_blocks import attention_blocks, set_heads
from onnxfn.prepare.blockwise import name_nodes
from onnxfn.prepare.ffn_blocks import FeedForward, feed_forward_blocks
from onnxfn.prepare.graph_walk import all_nodes
from onnxfn.prepare.quantization import first_line

__all__ = ["FeedForward", "PruningError", "feed_forward_blocks", "kept_neurons", "neuron_scores", "prune_feed_forward"]

# Blocks at least this wide keep a multiple of 32 neurons: whole SIMD rows and quantization blocks.
ALIGN_FROM, ALIGN = 128, 32


class PruningError(UserError, ValueError):
    """``--prune`` cannot be applied; the message says why and what it needs."""


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
        raise PruningError(
            f"--prune: the pruned graph does not load in onnxruntime ({first_line(exc)}); prune without it"
        ) from exc


def kept_neurons(width: int, fraction: float) -> int:
    """How many of ``width`` neurons stay at ``fraction`` pruned (wide blocks keep a multiple of 32)."""
    kept = width - round(width * fraction)
    if width >= ALIGN_FROM:
        return min(width, max(ALIGN, round(kept / ALIGN) * ALIGN))
    return min(width, max(1, kept))


def prune_feed_forward(
    model: onnx.ModelProto,
    fraction: float | None,
    feeds: list[dict[str, np.ndarray]],
    calibration: str,
    *,
    heads: float | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """A copy of ``model`` with ``fraction`` of every feed-forward block's neurons and ``heads`` of
    every attention block's heads removed (either may be ``None``), and the facts the manifest
    records. ``calibration`` says where ``feeds`` came from."""
    for flag, value in (("--prune", fraction), ("--prune-heads", heads)):
        if value is not None and not 0 < value < 1:
            raise PruningError(f"{flag} {value:g}: expected a fraction, above 0 and below 1")
    if not feeds:
        raise PruningError("pruning needs calibration samples to rank neurons by; give --calibration FILE")
    named = onnx.ModelProto()
    named.CopyFrom(model)
    name_nodes(named)  # blocks are found and edited by node name
    model = named
    blocks = _blocks(model, fraction, heads)
    stats = neuron_scores(model, blocks, feeds)
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    graph = pruned.graph
    index = {t.name: i for i, t in enumerate(graph.initializer)}
    described: list[dict[str, Any]] = []
    removed = 0
    replaced: set[str] = set()
    # Last block first: when one block's narrowing op widens the next, the next block's cuts are
    # made before this block folds its means into (or after) that op, so the shapes agree.
    for block in reversed(blocks):
        scores, means = stats[block.hidden]
        groups = block.width // block.group
        if block.group == 1:
            kept = kept_neurons(block.width, fraction or 0.0)
        else:  # a head goes whole: its score is its columns' together
            kept = max(1, groups - round(groups * (heads or 0.0)))
            scores = scores.reshape(groups, block.group).sum(axis=1)
        order = np.argsort(scores, kind="stable")
        keep_groups, drop_groups = np.sort(order[len(order) - kept :]), order[: len(order) - kept]
        keep, drop = (_columns(ids, block.group) for ids in (keep_groups, drop_groups))
        _fold_means(graph, index, block, means, drop)
        for name, axis in block.cuts:
            position = index[name]
            array = numpy_helper.to_array(graph.initializer[position])
            cut = np.take(array, keep, axis=axis)
            removed += array.size - cut.size
            graph.initializer[position].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(cut), name))
        if block.reshapes:
            replaced |= set_heads(graph, block, kept)
            index = {t.name: i for i, t in enumerate(graph.initializer)}
        unit = "heads" if block.group > 1 else "neurons"
        described.insert(0, {"first": block.first, "second": block.second, unit: groups, "kept": kept})
    ffn = [b for b in described if "neurons" in b]
    attention = [b for b in described if "heads" in b]
    for flag, chosen, unit in (("--prune", ffn, "neurons"), ("--prune-heads", attention, "heads")):
        if chosen and all(b["kept"] == b[unit] for b in chosen):
            widths = ", ".join(map(str, sorted({b[unit] for b in chosen})))
            step = f" (blocks of {ALIGN_FROM} or more lose {ALIGN} at a time)" if unit == "neurons" else ""
            raise PruningError(
                f"{flag} {fraction if unit == 'neurons' else heads:g} removes no {unit[:-1]} from blocks of "
                f"{widths}{step}: give a larger fraction"
            )
    cut_names = {name for block in blocks for name, _ in block.cuts}
    for position, entry in enumerate(graph.input):
        if entry.name in cut_names:  # an initializer listed as an input (IR < 4): its shape changed
            dims = list(graph.initializer[index[entry.name]].dims)
            graph.input[position].CopyFrom(onnx.helper.make_tensor_value_info(entry.name, TensorProto.FLOAT, dims))
    read = {name for node in all_nodes(graph) for name in node.input}
    for tensor in [t for t in graph.initializer if t.name in replaced and t.name not in read]:
        graph.initializer.remove(tensor)  # a shape the Reshapes of every layer shared, now read by none
    changed = {t for block in blocks for t in block.tensors}
    kept_info = [v for v in graph.value_info if v.name not in changed]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    _check_loads(pruned)
    rows = sum(len(next(iter(feed.values()))) for feed in feeds)
    facts: dict[str, Any] = {"calibration": f"{calibration}, {rows} rows", "parameters_removed": removed}
    if ffn:
        facts |= {
            "fraction": fraction,
            "what": "feed-forward neurons (whole columns of the first weight, rows of the second)",
            "score": "peak |activation| on the calibration rows × L2 norm of the neuron's outgoing weights",
            "compensation": "each removed neuron's mean activation × its outgoing weights, added to the block's bias",
            "blocks": ffn,
            "neurons": sum(int(b["neurons"]) for b in ffn),
            "kept_neurons": sum(int(b["kept"]) for b in ffn),
        }
    if attention:
        facts["heads"] = {
            "fraction": heads,
            "score": "the sum of the head's columns' scores (as for neurons, on the attention output's input)",
            "blocks": attention,
            "heads": sum(int(b["heads"]) for b in attention),
            "kept_heads": sum(int(b["kept"]) for b in attention),
        }
    return pruned, facts


def _blocks(model: onnx.ModelProto, fraction: float | None, heads: float | None) -> list[FeedForward]:
    """The blocks to prune, in graph order; a flag with no block to act on is refused."""
    blocks = []
    if fraction is not None:
        blocks = feed_forward_blocks(model)
        if not blocks:
            raise PruningError(
                "--prune: this graph has no feed-forward block to prune (a MatMul or Gemm with a constant weight, "
                "an elementwise activation, and a second such op reading only it)"
            )
    if heads is not None:
        attention = attention_blocks(model)
        if not attention:
            raise PruningError(
                "--prune-heads: this graph has no attention block whose heads can be removed (Q, K and V "
                "projections reshaped to [.., heads, size] by constant shapes, as BERT checkpoints are written)"
            )
        order = {node.name: i for i, node in enumerate(model.graph.node)}
        blocks = sorted([*blocks, *attention], key=lambda b: order[b.second])
    return blocks


def _columns(groups: np.ndarray, size: int) -> np.ndarray:
    """The column indices of ``groups`` of ``size`` consecutive columns each."""
    return (np.asarray(groups)[:, None] * size + np.arange(size)[None, :]).reshape(-1)

"""The ``fp16`` quantization mode: float16 weights, fp32 compute where onnxruntime's CPU has no fp16 kernel.

``convert_fp16`` is what ``quantization.quantize`` calls for that mode. Ops without a float16
kernel in onnxruntime's CPU provider are kept in fp32, and the Casts the converter leaves around
them are cleaned up so the result loads and loses no precision between two fp32 ops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto


def convert_fp16(model: onnx.ModelProto, dst: Path, excluded: list[str]) -> dict[str, Any]:
    """Write ``model`` with float16 weights to ``dst`` and return the facts for the manifest.

    Inputs and outputs stay fp32. Nodes whose op onnxruntime's CPU provider cannot run in float16,
    and the nodes named in ``excluded``, compute in fp32; their weights are stored in fp16 all the same.

    Parameters
    ----------
    model
        The fp32 model, as loaded by ``quantize``.
    dst
        Where to write the result (the caller stages it and checks that it loads).
    excluded
        Names of nodes to keep in fp32.

    Returns
    -------
    dict
        ``weight_type``, ``excluded_nodes``, ``blocked_op_types`` (the op types kept in fp32 for
        want of a kernel) and ``quantized_nodes`` (nodes other than Casts with an fp16 output).
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    kernels = _cpu_fp16_ops()
    blocked = sorted({n.op_type for n in model.graph.node if (op_domain(n), n.op_type) not in kernels})
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=blocked,
        node_block_list=excluded,
        # The weights of blocked nodes are stored in fp16 too (the size is the point); onnxruntime
        # folds their Cast back to fp32 when it creates the session.
        force_fp16_initializers=True,
    )
    _tidy_fp16(converted)
    onnx.save_model(converted, str(dst))
    types = tensor_types(converted)
    half = [n for n in converted.graph.node if n.op_type != "Cast" and TensorProto.FLOAT16 in map(types.get, n.output)]
    return {
        "weight_type": "FLOAT16",
        "excluded_nodes": excluded,
        "blocked_op_types": blocked,
        "quantized_nodes": len(half),
    }


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name to ONNX element type, for the initializers and the typed inputs, values and outputs."""
    graph = model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    return types


def op_domain(node: onnx.NodeProto) -> str:
    """The node's operator domain, with ``ai.onnx`` spelled ``""`` as onnxruntime's kernel registry does."""
    return "" if node.domain in ("", "ai.onnx") else node.domain


def _cpu_fp16_ops() -> set[tuple[str, str]]:
    """(domain, op) pairs that onnxruntime's CPU provider can run on float16 tensors."""
    from onnxruntime.capi import _pybind_state

    return {
        (kernel.domain, kernel.op_name)
        for kernel in _pybind_state.get_all_opkernel_def()
        if kernel.provider == "CPUExecutionProvider"
        and any("tensor(float16)" in types for types in kernel.type_constraints.values())
    }


def _tidy_fp16(model: onnx.ModelProto) -> None:
    """Repair and trim what ``convert_float_to_float16`` leaves around blocked (fp32) nodes.

    It adds one Cast per blocked consumer of a tensor, all with the same name and output, which
    onnxruntime rejects: keep one. And it rounds every fp32 tensor passed between two blocked
    nodes to fp16 and back (fp32 -> fp16 -> fp32 Casts), which only loses precision: bypass them.
    """
    graph = model.graph
    unique = {(n.op_type, tuple(n.input), tuple(n.output)): n for n in reversed(graph.node)}
    nodes = [n for n in graph.node if unique[(n.op_type, tuple(n.input), tuple(n.output))] is n]
    types = tensor_types(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    source: dict[str, str] = {}  # output of a dropped fp16 -> fp32 Cast: the fp32 tensor it copies
    dropped: set[int] = set()
    for node in nodes:
        users = consumers.get(node.output[0], []) if _is_cast(node, TensorProto.FLOAT16) else []
        if (
            users
            and types.get(node.input[0]) == TensorProto.FLOAT
            and node.output[0] not in outputs
            and all(_is_cast(u, TensorProto.FLOAT) for u in users)
        ):
            dropped.update(id(n) for n in [node, *users])
            source.update((u.output[0], node.input[0]) for u in users)

    def origin(name: str) -> str:
        while name in source:  # back-to-back round trips
            name = source[name]
        return name

    kept = [n for n in nodes if id(n) not in dropped]
    for node in kept:
        node.input[:] = [origin(name) for name in node.input]
    # A graph output fed by a round trip keeps its name.
    kept += [onnx.helper.make_node("Identity", [origin(o)], [o], name=f"{o}_fp32") for o in outputs if o in source]
    del graph.node[:]
    graph.node.extend(kept)


def _is_cast(node: onnx.NodeProto, to: int) -> bool:
    return node.op_type == "Cast" and any(a.name == "to" and a.i == to for a in node.attribute)

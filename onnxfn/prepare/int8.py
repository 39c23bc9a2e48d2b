"""Int8 quantization of ONNX graphs: onnxruntime's dynamic quantization, and row-wise embeddings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# quantize_dynamic warns on every call that no pre-processing ran. For dynamic quantization of
# MatMul weights that step changes nothing, so the warning is noise in a build log.
_PRE_PROCESS_HINT = "Please consider to run pre-processing before quantization"


def _drop_pre_process_hint(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_PRE_PROCESS_HINT)


def quantize_dynamic_int8(
    src: Path,
    dst: Path,
    *,
    per_channel: bool = True,
    exclude_nodes: list[str] | None = None,
    reduce_range: bool = False,
    op_types: list[str] | None = None,
) -> None:
    """Quantize the weights of ``src`` to signed int8 and write the result to ``dst``.

    Activations are quantized at run time (uint8, one scale per tensor and call), so no
    calibration data is needed. Per-channel weight scales matter for transformer encoders:
    per-tensor scales cost MiniLM a mean cosine of 0.96 against 0.99 (see DESIGN.md).

    Parameters
    ----------
    src
        The fp32 model.
    dst
        Where to write the quantized model.
    per_channel
        One scale per output channel of each weight instead of one per tensor.
    exclude_nodes
        Names of nodes to leave in fp32, typically the few whose error dominates.
    reduce_range
        Quantize weights to 7 bits. This avoids the int16 saturation of the u8s8 kernels on
        x86 CPUs without VNNI, at the price of half the weight resolution.
    op_types
        Operator types to quantize; ``None`` means every type the tool supports (MatMul,
        Gather, Attention, ...). ``["MatMul"]`` leaves embedding tables alone.
    """
    # Imported here: onnxruntime.quantization is slow to import and only builds need it.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    extra_options: dict[str, Any] = {
        # A graph fused by onnxruntime.transformers (Attention, SkipLayerNormalization) has
        # tensors whose type shape inference cannot tell; without a default the tool fails.
        "DefaultTensorType": TensorProto.FLOAT,
    }
    root = logging.getLogger()
    root.addFilter(_drop_pre_process_hint)
    try:
        quantize_dynamic(
            Path(src),
            Path(dst),
            op_types_to_quantize=op_types,
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude_nodes or []),
            extra_options=extra_options,
        )
    finally:
        root.removeFilter(_drop_pre_process_hint)


def quantize_gather_rows_int8(model: onnx.ModelProto, node_name: str) -> onnx.ModelProto:
    """Store the table read by Gather ``node_name`` as int8 with one fp32 scale per row.

    onnxruntime's dynamic quantization gives an embedding table a single uint8 scale, which the
    few large rows stretch (for MiniLM it costs 0.007 of the worst sentence cosine). One
    symmetric scale per row costs nothing measurable (cosine >= 0.9998) and keeps the 4x
    saving: ``Gather(int8) -> Cast -> Mul(Gather(scales))`` replaces the fp32 lookup.

    Parameters
    ----------
    model
        The model; it is not modified.
    node_name
        Name of a Gather (axis 0) whose data input is a 2-D fp32 initializer.

    Returns
    -------
    onnx.ModelProto
        A copy of ``model`` with the table quantized and the lookup rewritten; the Gather's
        output name and dtype are unchanged.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    index, node = next(((i, n) for i, n in enumerate(graph.node) if n.name == node_name), (-1, None))
    if node is None or node.op_type != "Gather":
        raise ValueError(f"no Gather node named {node_name!r} in the graph")
    if any(a.name == "axis" and a.i != 0 for a in node.attribute):
        raise ValueError(f"{node_name}: only a Gather on axis 0 reads rows of a table")
    table_name, indices = node.input[0], node.input[1]
    position = next((i for i, t in enumerate(graph.initializer) if t.name == table_name), -1)
    if position < 0:
        raise ValueError(f"{node_name}: data input {table_name!r} is not an initializer")
    table = numpy_helper.to_array(graph.initializer[position])
    if table.dtype != np.float32 or table.ndim != 2:
        raise ValueError(f"{node_name}: expected a 2-D float32 table, got {table.dtype} {table.shape}")

    row_max = np.abs(table).max(axis=1, keepdims=True)
    scale = np.where(row_max > 0, row_max / 127.0, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    q_name, s_name = f"{table_name}_int8", f"{table_name}_row_scale"
    del graph.initializer[position]
    graph.initializer.extend([numpy_helper.from_array(quantized, q_name), numpy_helper.from_array(scale, s_name)])

    result = node.output[0]
    node.input[0] = q_name
    node.output[0] = f"{result}_int8"
    rewrite = [
        helper.make_node("Gather", [s_name, indices], [f"{result}_scale"], name=f"{node_name}_row_scale"),
        helper.make_node("Cast", [node.output[0]], [f"{result}_float"], name=f"{node_name}_Cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{result}_float", f"{result}_scale"], [result], name=f"{node_name}_Mul"),
    ]
    for offset, new_node in enumerate(rewrite, start=1):
        graph.node.insert(index + offset, new_node)
    return out

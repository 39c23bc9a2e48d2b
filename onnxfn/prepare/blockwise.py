"""The ``blockwise`` quantization mode: MatMul weights in blocks (``MatMulNBits``), embedding tables by rows.

onnxruntime's ``MatMulNBits`` stores a MatMul weight as 4- or 8-bit integers with one fp32 scale per
block of ``block_size`` values along the reduced axis, so an outlier costs resolution in its own
block only. ``accuracy_level`` 4 quantizes the activation to int8 per block at run time as well,
which is what makes the op fast on CPUs; the per-block scale is also why it keeps the accuracy
that one per-tensor activation scale (``dynamic``) loses on BERT's [CLS] outliers.

Embedding tables (a Gather on axis 0 of a 2-D fp32 initializer) dominate the size of small
encoders and are not MatMuls: ``int8`` stores each row with its own scale
(``int8.quantize_gather_rows_int8``), ``int4`` uses onnxruntime's ``GatherBlockQuantized`` (4-bit,
blocks along the row), ``fp32`` leaves them.

``quantize_blockwise`` is what ``quantization.quantize`` calls for the mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from onnxfn.prepare.fp16 import op_domain
from onnxfn.prepare.graph_walk import all_nodes
from onnxfn.prepare.int8 import quantize_gather_rows_int8

BITS = (4, 8)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
EMBEDDINGS = ("int8", "int4", "fp32")
# MatMulNBits' accuracy_level: the least precise type the kernel may compute the activation in.
ACTIVATIONS = {
    0: "as the kernel chooses (accuracy_level 0)",
    1: "fp32 (accuracy_level 1)",
    2: "fp16 or better (accuracy_level 2)",
    3: "bf16 or better (accuracy_level 3)",
    4: "int8, one scale per block, quantized at run time (accuracy_level 4)",
}
_QUANTIZER_LOGGER = "onnxruntime.quantization.matmul_nbits_quantizer"


@dataclass(frozen=True)
class BlockOptions:
    """``--bits``, ``--block-size``, ``--accuracy-level`` and ``--embeddings``, with their defaults."""

    bits: int = 8
    block_size: int = 128
    accuracy_level: int = 4
    embeddings: str = "int8"

    def problems(self) -> list[str]:
        """What is wrong with these options, as the flags name it; empty when they are usable."""
        found = []
        if self.bits not in BITS:
            found.append(f"--bits {self.bits}: expected one of {', '.join(map(str, BITS))}")
        size = self.block_size
        if size < 16 or size & (size - 1):
            found.append(f"--block-size {size}: expected a power of two ≥ 16 (16, 32, 64, 128, 256…)")
        if self.accuracy_level not in ACCURACY_LEVELS:
            found.append(f"--accuracy-level {self.accuracy_level}: expected 0 to 4 (4: int8 activations per block)")
        if self.embeddings not in EMBEDDINGS:
            found.append(f"--embeddings {self.embeddings!r}: expected one of {', '.join(EMBEDDINGS)}")
        return found


def reason(options: BlockOptions, matmuls: int) -> str:
    """The manifest's sentence for ``auto`` choosing this recipe with ``options``."""
    tables = {"int8": "int8 rows", "int4": "int4 blocks", "fp32": "fp32"}[options.embeddings]
    return (
        f"{options.bits}-bit blocks of {options.block_size} (MatMulNBits, accuracy level {options.accuracy_level}) "
        f"for the weights of {matmuls} MatMul, {tables} for the embedding tables: BERT's default"
    )


def embedding_gathers(model: onnx.ModelProto, excluded: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Names of the Gathers that read rows (axis 0) of a 2-D fp32 initializer: embedding tables.

    A table that anything else reads too (a tied output projection, a second lookup) is left out:
    quantizing it would take the fp32 table from under the other reader."""
    tables = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 2}
    readers: dict[str, int] = {}
    for node in all_nodes(model.graph):
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "Gather"
        and op_domain(node) == ""
        and node.name not in excluded
        and node.input[0] in tables
        and readers[node.input[0]] == 1
        and all(a.i == 0 for a in node.attribute if a.name == "axis")
    ]


def quantize_blockwise(
    model: onnx.ModelProto, dst: Path, excluded: list[str], options: BlockOptions
) -> tuple[dict[str, Any], dict[str, str]]:
    """Write ``model`` with block-quantized MatMul weights and quantized embeddings to ``dst``.

    Returns the facts for the manifest and, for counting, each candidate MatMul's fp32 weight.
    Nodes named in ``excluded`` (MatMuls or Gathers) stay fp32.
    """
    name_nodes(model)
    opset = _opset(model)
    tables = embedding_gathers(model, excluded)
    if options.embeddings == "int8":
        for name in tables:
            model = quantize_gather_rows_int8(model, name)
    elif options.embeddings == "int4" and tables:
        model = _nbits(model, options, ("Gather",), include=tables)
    candidates = {
        node.name: node.input[1]
        for node in model.graph.node
        if node.op_type == "MatMul" and op_domain(node) == "" and node.name not in excluded and node.input[1:2]
    }
    weights = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 2}
    candidates = {name: weight for name, weight in candidates.items() if weight in weights}
    if candidates:
        model = _nbits(model, options, ("MatMul",), include=list(candidates))
    onnx.save(model, str(dst))
    facts = {
        "weight_type": f"int{options.bits}, symmetric, one fp32 scale per block of {options.block_size} (MatMulNBits)",
        "bits": options.bits,
        "block_size": options.block_size,
        "accuracy_level": options.accuracy_level,
        "activation_type": ACTIVATIONS[options.accuracy_level],
        "op_types": ["MatMul"],
        "excluded_nodes": excluded,
        "embeddings": _embedding_words(options, len(tables)),
        "embedding_nodes": tables if options.embeddings != "fp32" else [],
    }
    if _opset(model) != opset:
        # onnxruntime's quantizer raises them for int4 tensors (GatherBlockQuantized); the result is
        # then checked to load like any other.
        facts["opset_raised"] = f"opset {opset} to {_opset(model)}, IR version to {model.ir_version}, for int4 tensors"
    return facts, candidates


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _embedding_words(options: BlockOptions, count: int) -> str:
    if not count:
        return "none quantized: no Gather reads rows of a 2-D fp32 table that nothing else reads"
    return {
        "int8": f"{count} table(s) in int8, one symmetric fp32 scale per row",
        "int4": f"{count} table(s) in int4, one fp32 scale per block of {options.block_size} (GatherBlockQuantized)",
        "fp32": f"{count} table(s) kept in fp32 (--embeddings fp32)",
    }[options.embeddings]


def _nbits(model: onnx.ModelProto, options: BlockOptions, op_types: tuple[str, ...], include: list[str]) -> Any:
    """``model`` with the nodes ``include`` names quantized by onnxruntime's MatMulNBitsQuantizer."""
    default_config, quantizer_class = _quantizer()
    # Blocks run along the reduced axis of a MatMul weight [K, N] and along a table's row.
    axes = (("MatMul", 0), ("Gather", 1))
    bits = 4 if op_types == ("Gather",) else options.bits  # GatherBlockQuantized is 4-bit here
    # The config and the quantizer both take these; the quantizer's own copies decide its checks.
    common: dict[str, Any] = {
        "block_size": options.block_size,
        "is_symmetric": True,
        "accuracy_level": options.accuracy_level,
        "bits": bits,
        "op_types_to_quantize": op_types,
        "quant_axes": axes,
    }
    # The quantizer takes every node of op_types that it can, whatever nodes_to_include says.
    others = [n.name for n in all_nodes(model.graph) if n.op_type in op_types and n.name not in include]
    quantizer = quantizer_class(model, nodes_to_exclude=others, algo_config=default_config(**common), **common)
    quantizer.process()
    result: onnx.ModelProto = quantizer.model.model
    return result


def name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed nodes a name, in place: the quantizers and the pruner select nodes by name."""
    taken = {node.name for node in model.graph.node}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _quantizer() -> tuple[Any, Any]:
    """onnxruntime's DefaultWeightOnlyQuantConfig and MatMulNBitsQuantizer, imported without their
    side effect: on import the module configures the root logger at INFO (``logging.basicConfig``),
    which would print every later record of the process; the root logger is put back at once."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    # Its warnings say it raised the opset for int4 and that the model "may not be valid":
    # quantize() checks that the result loads, and the manifest records the new opset.
    logging.getLogger(_QUANTIZER_LOGGER).setLevel(logging.ERROR)
    return DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

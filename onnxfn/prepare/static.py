"""The ``static`` quantization mode: QDQ int8 with activation scales calibrated on samples.

onnxruntime's ``quantize_static`` does the work; this module chooses what it must leave in fp32
(the MatMuls whose static scales wreck accuracy: attention's activation products and the
feed-forward outputs after GELU) and makes fused graphs quantizable. ``quantization.quantize``
calls ``quantize_static_qdq`` for the mode.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from onnxfn.prepare.calibration import CalibrationReader
from onnxfn.prepare.fp16 import op_domain, tensor_types

# quantize_static advises quant_pre_process on every call. Its graph optimizations may fuse or
# rename the nodes the exclusion lists name, so it is not run, and the advice is noise.
_PRE_PROCESS_HINT = "pre-processing before quantization"
# onnxruntime's dynamic quantizer has no Gemm operator: Gemm stays fp32 in dynamic mode.
WEIGHT_OPS = ("MatMul", "Gemm")

# The second projection of a BERT feed-forward block, as torch.onnx and onnxfn.prepare.bert name it.
_FFN_OUTPUT = re.compile(r"(^|/)encoder/layer\.\d+/output/dense/MatMul$")
_GELU_OPS = frozenset({"Gelu", "BiasGelu", "FastGelu", "QuickGelu"})


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of MatMuls whose two inputs both vary with the input (attention's Q·Kᵀ and probs·V).

    Static quantization gives each operand one scale fixed in advance; in attention the rare
    extremes set it and the products lose most of their resolution (DESIGN.md).
    """
    constant = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        # A node fed only by constants (Transpose of a weight, Constant) yields a constant.
        if node.op_type == "Constant" or (node.input and all(not i or i in constant for i in node.input)):
            constant.update(node.output)
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not constant.intersection(n.input[:2])]


def ffn_output_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of feed-forward output MatMuls: BERT's ``layer.N/output/dense``, and any fed by a GELU op.

    A GELU output has a few very large values per sequence, which one fixed scale cannot serve.
    """
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and (_FFN_OUTPUT.search(node.name) or producers.get(node.input[0]) in _GELU_OPS)
    ]


def quantize_static_qdq(
    src: Path,
    staged: Path,
    model: onnx.ModelProto,
    excluded: list[str],
    per_channel: bool,
    calibration: list[dict[str, np.ndarray]],
    op_types: tuple[str, ...] = WEIGHT_OPS,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Write ``src`` as QDQ int8 to ``staged``, leaving in fp32 what static scales wreck; return the
    facts for the manifest and each candidate node's fp32 weight. A bad calibration set raises
    ``CalibrationError``."""
    automatic = [n for n in activation_matmuls(model) + ffn_output_matmuls(model) if n not in excluded]
    excluded = list(dict.fromkeys(excluded + automatic))
    candidates = weight_nodes(model, op_types, excluded)
    facts = {
        "weight_type": "QInt8",
        "activation_type": "QUInt8, one scale per tensor fixed by calibration",
        "format": "QDQ",
        "op_types": list(op_types),
        "excluded_nodes": excluded,
        "auto_excluded_nodes": automatic,
        "calibration_batches": len(calibration),
        "calibration_rows": sum(len(next(iter(feed.values()))) for feed in calibration),
    }
    weights = {t.name for t in model.graph.initializer}
    reader = CalibrationReader(calibration, [i.name for i in model.graph.input if i.name not in weights])
    if not candidates:
        shutil.copyfile(src, staged)
        return facts, candidates
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with _quiet(_PRE_PROCESS_HINT):
        quantize_static(
            _type_matmul_inputs(model, candidates) or src,
            staged,
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            # u8 activations with s8 weights: the pair dynamic mode uses, onnxruntime's x86 fast path.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "DefaultTensorType": TensorProto.FLOAT,
                # Left in fp32, a MatMul output is not rounded again for a consumer that computes
                # in fp32, and DQ -> MatMul fuses into MatMulIntegerToFloat.
                # Conv keeps its output quantized: Q after Conv lets onnxruntime fuse QLinearConv.
                "OpTypesToExcludeOutputQuantization": [op for op in op_types if op != "Conv"],
                # A Q -> DQ pair per quantized consumer: the other consumers of a tensor (the
                # residual Add beside the MatMuls reading a LayerNorm) keep it exact. Faster too.
                "DedicatedQDQPair": True,
                # Ranges taken batch by batch and merged, instead of holding every calibrated tensor
                # of every batch. Not CalibMaxIntermediateOutputs: in onnxruntime 1.31 it drops them.
                "CalibStridedMinMax": 1,
            },
        )
    return facts, candidates


def _type_matmul_inputs(model: onnx.ModelProto, candidates: dict[str, str]) -> onnx.ModelProto | None:
    """A copy of ``model`` typing each candidate's activation input like its weight, if ONNX cannot.

    The quantizer skips (with a warning) activations of unknown type, as behind the contrib ops of
    a fused graph (Attention, SkipLayerNormalization); the MatMul then gets int8 weights but runs
    in fp32, slower than before. MatMul and Gemm inputs share one type. ``None``: all known.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    types = tensor_types(inferred)
    nodes = {node.name: node for node in inferred.graph.node}
    missing = {nodes[name].input[0]: types[weight] for name, weight in candidates.items()}
    missing = {name: elem for name, elem in missing.items() if name not in types}
    if not missing:
        return None
    inferred.graph.value_info.extend(onnx.helper.make_tensor_value_info(n, t, None) for n, t in missing.items())
    return inferred


@contextlib.contextmanager
def _quiet(text: str) -> Iterator[None]:
    """Drop root-logger records containing ``text``."""

    def keep(record: logging.LogRecord) -> bool:
        return text not in str(record.msg)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def weight_nodes(model: onnx.ModelProto, op_types: tuple[str, ...], excluded: list[str]) -> dict[str, str]:
    """Node name to fp32 weight initializer, for the nodes of ``op_types`` the quantizer can take."""
    weights = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    return {
        node.name: node.input[1]
        for node in model.graph.node
        if node.op_type in op_types
        and op_domain(node) == ""
        and node.name not in excluded
        and node.input[1:2]
        and node.input[1] in weights
    }

"""Shrink an ONNX model for Lambda: int8 weights (dynamic or static QDQ), fp16 weights, or as is.

``quantize`` is what ``onnxfn add`` calls; it writes the model atomically and returns the facts the
manifest records. ``preoptimize`` saves onnxruntime's optimized graph so a cold start can skip
graph optimization. Both check that the result loads in onnxruntime on CPU before returning.
The fp16 conversion itself is in ``onnxfn.prepare.fp16``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from onnxfn.errors import UserError
from onnxfn.prepare.calibration import CalibrationError, CalibrationReader
from onnxfn.prepare.fp16 import convert_fp16, op_domain, tensor_types
from onnxfn.prepare.int8 import quantize_dynamic_int8

MODES = ("dynamic", "static", "fp16", "none")
CHOICES = ("auto", *MODES)  # auto: onnxfn.prepare.recipes chooses one from the graph
OPTIMIZATION_LEVELS = ("basic", "extended")
# onnxruntime's dynamic quantizer has no Gemm operator: Gemm stays fp32 in dynamic mode.
WEIGHT_OPS = ("MatMul", "Gemm")
# The second projection of a BERT feed-forward block, as torch.onnx and onnxfn.prepare.bert name it.
_FFN_OUTPUT = re.compile(r"(^|/)encoder/layer\.\d+/output/dense/MatMul$")
_GELU_OPS = frozenset({"Gelu", "BiasGelu", "FastGelu", "QuickGelu"})
# quantize_static advises quant_pre_process on every call. Its graph optimizations may fuse or
# rename the nodes the exclusion lists name, so it is not run, and the advice is noise.
_PRE_PROCESS_HINT = "pre-processing before quantization"


class QuantizationError(UserError, ValueError):
    """A model could not be quantized or optimized; the message says what failed and what to do."""


def quantize(
    src: Path,
    dst: Path,
    mode: str,
    *,
    calibration: list[dict[str, np.ndarray]] | None = None,
    exclude_nodes: list[str] | None = None,
    per_channel: bool = True,
    op_types: tuple[str, ...] = WEIGHT_OPS,
) -> dict[str, Any]:
    """Write ``src`` quantized with ``mode`` to ``dst`` and return the facts for the manifest.

    ``dynamic``: int8 MatMul weights, activations quantized per call (no data needed). ``static``:
    QDQ with activation scales fixed by ``calibration``, leaving in fp32 the MatMuls that static
    scales wreck. ``fp16``: float16 weights, fp32 compute wherever onnxruntime's CPU provider
    has no float16 kernel. ``none``: a copy. A model with nothing to quantize is copied, with
    ``quantized_nodes`` 0. ``dst`` appears only once the result loads in onnxruntime.

    Parameters
    ----------
    src
        The fp32 model (one file, weights inline).
    dst
        Where to write the result; its folder is created if missing.
    mode
        One of ``MODES``.
    calibration
        ``static`` only: feed dicts of model inputs with a batch dimension (``load_calibration``).
    exclude_nodes
        Names of nodes to keep in fp32, on top of those ``static`` excludes by itself.
    per_channel
        One int8 scale per output channel of each weight rather than one per tensor.
    op_types
        ``static`` only: the weight ops to quantize (MatMul and Gemm by default; Conv too when asked).

    Returns
    -------
    dict
        JSON-serialisable: ``method``, ``weight_type``, ``per_channel``, ``excluded_nodes``,
        ``quantized_nodes``, ``original_bytes``, ``quantized_bytes``, ``onnxruntime``, and per
        mode ``activation_type``, ``auto_excluded_nodes``, ``calibration_rows``, ``blocked_op_types``...

    Raises
    ------
    QuantizationError
        Unknown mode or node, no calibration set, a failure of the tool, or a result that
        onnxruntime cannot load.
    """
    import onnxruntime

    if mode not in MODES:
        raise QuantizationError(f"unknown quantization mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "static" and not calibration:
        raise QuantizationError(
            "static quantization needs a calibration set: --calibration FILE (.npy, .jsonl or text lines)"
        )
    src, dst = Path(src), Path(dst)
    model = _load(src, mode)
    excluded = list(dict.fromkeys(exclude_nodes or []))
    unknown = sorted(set(excluded) - {node.name for node in model.graph.node})
    if unknown:
        raise QuantizationError(f"{mode}: no node named {', '.join(map(repr, unknown))} in {src.name}; check the names")

    facts: dict[str, Any] = {"method": mode, "per_channel": per_channel and mode in ("dynamic", "static")}
    candidates: dict[str, str] | None = None  # int8 modes: node -> the weight handed to the tool
    with _staged(dst) as staged:
        try:
            if mode == "dynamic":
                part, candidates = _dynamic(src, staged, model, excluded, per_channel)
            elif mode == "static":
                assert calibration is not None  # checked above
                part, candidates = _static(src, staged, model, excluded, per_channel, calibration, op_types)
            elif mode == "fp16":
                part = convert_fp16(model, staged, excluded)
            else:
                shutil.copyfile(src, staged)
                part = {"weight_type": "FLOAT", "excluded_nodes": [], "quantized_nodes": 0}
        except QuantizationError:
            raise
        except Exception as exc:
            raise QuantizationError(
                f"{mode} quantization of {src.name} failed: {_first_line(exc)}; "
                "exclude the node it names (--exclude-nodes) or choose another --quantization mode"
            ) from exc
        _check_loads(staged, mode, shown=dst.name)
        if candidates is not None:
            part |= _count_quantized(candidates, staged, static=mode == "static")
    return (
        facts
        | part
        | {
            "original_bytes": src.stat().st_size,
            "quantized_bytes": dst.stat().st_size,
            "onnxruntime": onnxruntime.__version__,
        }
    )


def preoptimize(src: Path, dst: Path, level: str = "extended") -> dict[str, Any]:
    """Save onnxruntime's optimized graph of ``src`` to ``dst`` at level ``basic`` or ``extended``.

    Lambda can then create its session with graph optimizations disabled, which shortens a cold
    start. ``all`` (``layout``) is refused: its layout transforms are chosen for the CPU that runs
    the optimizer, and the build machine is not the Lambda host.

    Parameters
    ----------
    src
        The model, usually the output of ``quantize``.
    dst
        Where to write the optimized model (atomically).
    level
        One of ``OPTIMIZATION_LEVELS``.

    Returns
    -------
    dict
        ``{"optimization_level": level, "bytes": size of dst}``.
    """
    import onnxruntime as ort

    if level in ("all", "layout"):
        raise QuantizationError(
            f"optimization level {level!r} bakes the build machine's CPU into the graph; use 'basic' or 'extended'"
        )
    if level not in OPTIMIZATION_LEVELS:
        raise QuantizationError(
            f"unknown optimization level {level!r}: expected one of {', '.join(OPTIMIZATION_LEVELS)}"
        )
    src, dst = Path(src), Path(dst)
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    with _staged(dst) as staged:
        options.optimized_model_filepath = str(staged)
        try:
            ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise QuantizationError(f"{level} optimization of {src.name} failed: {_first_line(exc)}") from exc
        _check_loads(staged, f"{level} optimization", shown=dst.name, optimize=False)
    return {"optimization_level": level, "bytes": dst.stat().st_size}


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


def _dynamic(
    src: Path, staged: Path, model: onnx.ModelProto, excluded: list[str], per_channel: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    candidates = _weight_nodes(model, ("MatMul",), excluded)
    if candidates:
        quantize_dynamic_int8(src, staged, per_channel=per_channel, exclude_nodes=excluded, op_types=["MatMul"])
    else:
        shutil.copyfile(src, staged)
    facts = {
        "weight_type": "QInt8",
        "activation_type": "QUInt8, one scale per tensor computed at run time",
        "op_types": ["MatMul"],
        "excluded_nodes": excluded,
    }
    return facts, candidates


def _static(
    src: Path,
    staged: Path,
    model: onnx.ModelProto,
    excluded: list[str],
    per_channel: bool,
    calibration: list[dict[str, np.ndarray]],
    op_types: tuple[str, ...] = WEIGHT_OPS,
) -> tuple[dict[str, Any], dict[str, str]]:
    automatic = [n for n in activation_matmuls(model) + ffn_output_matmuls(model) if n not in excluded]
    excluded = list(dict.fromkeys(excluded + automatic))
    candidates = _weight_nodes(model, op_types, excluded)
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
    try:
        reader = CalibrationReader(calibration, [i.name for i in model.graph.input if i.name not in weights])
    except CalibrationError as exc:
        raise QuantizationError(f"static: {exc}") from exc
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


def _weight_nodes(model: onnx.ModelProto, op_types: tuple[str, ...], excluded: list[str]) -> dict[str, str]:
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


def _count_quantized(candidates: dict[str, str], path: Path, *, static: bool) -> dict[str, int]:
    """Candidates whose fp32 weight is gone; for ``static`` also those reading a dequantized input."""
    model = onnx.load(str(path), load_external_data=False)
    left = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    counts = {"quantized_nodes": sum(weight not in left for weight in candidates.values())}
    if static:
        producers = {out: node.op_type for node in model.graph.node for out in node.output}
        counts["activation_quantized_nodes"] = sum(
            node.name in candidates and producers.get(node.input[0]) == "DequantizeLinear" for node in model.graph.node
        )
    return counts


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


def _load(src: Path, mode: str) -> onnx.ModelProto:
    try:
        return onnx.load(str(src))
    except Exception as exc:
        raise QuantizationError(f"{mode}: cannot read {src} as an ONNX model: {_first_line(exc)}") from exc


def _check_loads(path: Path, what: str, *, shown: str, optimize: bool = True) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        problem = _first_line(exc).replace(str(path), shown)  # name dst, not the temporary file
        raise QuantizationError(
            f"{what}: the result does not load in onnxruntime: {problem}; try another mode"
        ) from exc


@contextlib.contextmanager
def _staged(dst: Path) -> Iterator[Path]:
    """A temporary path beside ``dst``, renamed to ``dst`` on success and removed on failure."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".partial")
    os.close(handle)
    staged = Path(name)
    try:
        yield staged
        os.replace(staged, dst)
    finally:
        staged.unlink(missing_ok=True)


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


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 300 else f"{line[:297]}..."

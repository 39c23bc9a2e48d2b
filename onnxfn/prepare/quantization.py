"""Shrink an ONNX model for Lambda: int8 weights (dynamic or static QDQ), fp16 weights, or as is.

``quantize`` is what ``onnxfn add`` calls; it writes the model atomically and returns the facts the
manifest records. ``preoptimize`` saves onnxruntime's optimized graph so a cold start can skip
graph optimization. Both check that the result loads in onnxruntime on CPU before returning.
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

from onnxfn.build.quantize import quantize_dynamic_int8

MODES = ("dynamic", "static", "fp16", "none")
OPTIMIZATION_LEVELS = ("basic", "extended")
# onnxruntime's dynamic quantizer has no Gemm operator: Gemm stays fp32 in dynamic mode.
WEIGHT_OPS = ("MatMul", "Gemm")
# The second projection of a BERT feed-forward block, as torch.onnx and onnxfn.build.bert name it.
_FFN_OUTPUT = re.compile(r"(^|/)encoder/layer\.\d+/output/dense/MatMul$")
_GELU_OPS = frozenset({"Gelu", "BiasGelu", "FastGelu", "QuickGelu"})
_STATIC_HINT = "pre-processing before quantization"


class QuantizationError(ValueError):
    """A model could not be quantized or optimized; the message says what failed and what to do."""


def quantize(
    src: Path,
    dst: Path,
    mode: str,
    *,
    calibration: list[dict[str, np.ndarray]] | None = None,
    exclude_nodes: list[str] | None = None,
    per_channel: bool = True,
) -> dict[str, Any]:
    """Write ``src`` quantized with ``mode`` to ``dst`` and return the facts for the manifest.

    ``dynamic`` stores MatMul weights as int8 (activations quantized per call, no data needed);
    ``static`` also fixes activation scales from ``calibration`` (QDQ format), leaving in fp32 the
    MatMuls whose accuracy it wrecks; ``fp16`` stores float weights as float16, computing in fp32
    wherever onnxruntime's CPU provider has no float16 kernel; ``none`` copies. A model with nothing
    to quantize is copied and reported with 0 quantized nodes. ``dst`` is written to a temporary
    file beside it and renamed only once the result loads in onnxruntime, so it is never partial.

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
        Names of nodes to keep in fp32, added to those ``static`` excludes by itself.
    per_channel
        One int8 scale per output channel of each weight rather than one per tensor.

    Returns
    -------
    dict
        JSON-serialisable: ``method``, ``weight_type``, ``per_channel``, ``excluded_nodes``,
        ``quantized_nodes``, ``original_bytes``, ``quantized_bytes``, ``onnxruntime`` and what the
        mode adds (``activation_type``, ``format``, ``calibration_rows``, ``blocked_op_types``).

    Raises
    ------
    QuantizationError
        Unknown mode, missing calibration, unknown node names, a failure of the underlying tool,
        or a result that onnxruntime cannot load.
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
    names = {node.name for node in model.graph.node}
    unknown = [name for name in excluded if name not in names]
    if unknown:
        raise QuantizationError(f"{mode}: no node named {', '.join(map(repr, unknown))} in {src.name}; check the names")

    int8 = mode in ("dynamic", "static")
    facts: dict[str, Any] = {"method": mode, "per_channel": per_channel if int8 else False}
    candidates: dict[str, str] = {}
    with _staged(dst) as staged:
        try:
            if mode == "dynamic":
                part, candidates = _dynamic(src, staged, model, excluded, per_channel)
                facts |= part
            elif mode == "static":
                assert calibration is not None  # checked above
                part, candidates = _static(src, staged, model, excluded, per_channel, calibration)
                facts |= part
            elif mode == "fp16":
                facts |= _fp16(model, staged, excluded)
            else:
                shutil.copyfile(src, staged)
                facts |= {"weight_type": "FLOAT", "excluded_nodes": [], "quantized_nodes": 0}
        except QuantizationError:
            raise
        except Exception as exc:
            raise QuantizationError(
                f"{mode} quantization of {src.name} failed: {_first_line(exc)}; "
                "exclude the node it names (--exclude-nodes) or choose another --quantization mode"
            ) from exc
        _check_loads(staged, mode)
        if int8:
            facts["quantized_nodes"] = _count_quantized(candidates, staged)
    return facts | {
        "original_bytes": src.stat().st_size,
        "quantized_bytes": dst.stat().st_size,
        "onnxruntime": onnxruntime.__version__,
    }


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
        _check_loads(staged, f"{level} optimization", optimize=False)
    return {"optimization_level": level, "bytes": dst.stat().st_size}


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of MatMuls whose two inputs both vary with the input (attention's Q·Kᵀ and probs·V).

    Their two operands get one static scale each, fixed by calibration; in attention that scale
    is set by rare extremes and the products lose most of their resolution (DESIGN.md).
    """
    constant = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        # A node fed only by constants (Transpose of a weight, Constant) yields a constant.
        if node.op_type == "Constant" or (node.input and all(not i or i in constant for i in node.input)):
            constant.update(node.output)
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and all(i not in constant for i in node.input[:2])
    ]


def ffn_output_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of feed-forward output MatMuls: BERT's ``layer.N/output/dense`` and any fed by a GELU op.

    GELU outputs carry a few very large values per sequence; one static scale for them costs
    MiniLM most of its accuracy (DESIGN.md).
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
    """Facts, and the weight of each node handed to the quantizer (none: the model is copied)."""
    candidates = _weight_nodes(model, ("MatMul",), excluded)
    facts: dict[str, Any] = {
        "weight_type": "QInt8",
        "activation_type": "QUInt8, one scale per tensor computed at run time",
        "op_types": ["MatMul"],
        "excluded_nodes": excluded,
    }
    if not candidates:
        shutil.copyfile(src, staged)
        return facts, {}
    quantize_dynamic_int8(src, staged, per_channel=per_channel, exclude_nodes=excluded, op_types=["MatMul"])
    return facts, candidates


def _static(
    src: Path,
    staged: Path,
    model: onnx.ModelProto,
    excluded: list[str],
    per_channel: bool,
    calibration: list[dict[str, np.ndarray]],
) -> tuple[dict[str, Any], dict[str, str]]:
    automatic = [n for n in activation_matmuls(model) + ffn_output_matmuls(model) if n not in excluded]
    excluded = list(dict.fromkeys(excluded + automatic))
    candidates = _weight_nodes(model, WEIGHT_OPS, excluded)
    facts: dict[str, Any] = {
        "weight_type": "QInt8",
        "activation_type": "QUInt8, one scale per tensor fixed by calibration",
        "format": "QDQ",
        "op_types": list(WEIGHT_OPS),
        "excluded_nodes": excluded,
        "auto_excluded_nodes": automatic,
        "calibration_batches": len(calibration),
        "calibration_rows": int(sum(len(next(iter(feed.values()))) for feed in calibration)),
    }
    if not candidates:
        shutil.copyfile(src, staged)
        return facts, {}
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with _quiet(_STATIC_HINT):
        quantize_static(
            src,
            staged,
            _FeedReader(calibration, model),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(WEIGHT_OPS),
            per_channel=per_channel,
            # uint8 activations: the u8s8 kernels are onnxruntime's fast path on every x86 CPU.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "DefaultTensorType": TensorProto.FLOAT,
                # A quantized MatMul output would be rounded again for a consumer that computes in
                # fp32; left float, DQ -> MatMul fuses into MatMulIntegerToFloat.
                "OpTypesToExcludeOutputQuantization": list(WEIGHT_OPS),
                # A Q -> DQ pair per quantized consumer: the others (the residual Add beside the
                # MatMuls reading a LayerNorm output) keep the exact fp32 tensor. Faster too.
                "DedicatedQDQPair": True,
                # Take ranges batch by batch (merged as min/max) rather than holding every calibrated
                # tensor of every batch in memory. Not CalibMaxIntermediateOutputs: onnxruntime 1.31
                # drops the batches it was meant to merge.
                "CalibStridedMinMax": 1,
            },
        )
    return facts, candidates


def _fp16(model: onnx.ModelProto, staged: Path, excluded: list[str]) -> dict[str, Any]:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    kernels = _cpu_fp16_ops()
    blocked = sorted({n.op_type for n in model.graph.node if (_domain(n), n.op_type) not in kernels})
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=blocked,
        node_block_list=excluded,
        # Weights of blocked nodes are stored in fp16 too (the size is the point); onnxruntime
        # folds their Cast back to fp32 when the session is created.
        force_fp16_initializers=True,
    )
    _drop_cast_round_trips(converted)
    onnx.save_model(converted, str(staged))
    types = _tensor_types(converted)
    fp16_nodes = [
        n.name
        for n in converted.graph.node
        if n.op_type != "Cast" and any(types.get(t) == TensorProto.FLOAT16 for t in [*n.input, *n.output])
    ]
    return {
        "weight_type": "FLOAT16",
        "excluded_nodes": excluded,
        "blocked_op_types": blocked,
        "quantized_nodes": len(fp16_nodes),
    }


class _FeedReader:
    """The calibration set as onnxruntime's CalibrationDataReader (it checks for ``get_next`` only)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], model: onnx.ModelProto) -> None:
        weights = {t.name for t in model.graph.initializer}
        names = [i.name for i in model.graph.input if i.name not in weights]
        for index, feed in enumerate(feeds):
            missing = [name for name in names if name not in feed]
            if missing:
                raise QuantizationError(
                    f"static: calibration batch {index} lacks input {', '.join(map(repr, missing))}; "
                    f"the model needs {', '.join(names)}"
                )
        self._feeds = [{name: feed[name] for name in names} for feed in feeds]
        self._next = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self._feeds[start_index:end_index])

    def rewind(self) -> None:
        self._next = iter(self._feeds)


def _weight_nodes(model: onnx.ModelProto, op_types: tuple[str, ...], excluded: list[str]) -> dict[str, str]:
    """Node name to weight initializer name, for the nodes of ``op_types`` the quantizer can take."""
    weights = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    return {
        node.name: node.input[1]
        for node in model.graph.node
        if node.op_type in op_types
        and _domain(node) == ""
        and node.name not in excluded
        and len(node.input) > 1
        and node.input[1] in weights
    }


def _count_quantized(candidates: dict[str, str], path: Path) -> int:
    """Candidates whose fp32 weight the quantizer replaced (it drops the fp32 tensor when it does)."""
    if not candidates:
        return 0
    model = onnx.load(str(path), load_external_data=False)
    left = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    return sum(weight not in left for weight in candidates.values())


def _cpu_fp16_ops() -> set[tuple[str, str]]:
    """(domain, op) pairs that onnxruntime's CPU provider can run on float16 tensors."""
    from onnxruntime.capi import _pybind_state

    return {
        (kernel.domain, kernel.op_name)
        for kernel in _pybind_state.get_all_opkernel_def()
        if kernel.provider == "CPUExecutionProvider"
        and any("tensor(float16)" in types for types in kernel.type_constraints.values())
    }


def _drop_cast_round_trips(model: onnx.ModelProto) -> int:
    """Remove fp32 -> fp16 -> fp32 Cast pairs the converter puts between two blocked nodes.

    They would round an fp32 activation to fp16 and back for nothing but lost precision.
    """
    graph = model.graph
    types = _tensor_types(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    dropped: list[onnx.NodeProto] = []
    for node in graph.node:
        if not (_is_cast(node, TensorProto.FLOAT16) and types.get(node.input[0]) == TensorProto.FLOAT):
            continue
        users = consumers.get(node.output[0], [])
        if node.output[0] in outputs or not users or not all(_is_cast(u, TensorProto.FLOAT) for u in users):
            continue
        dropped.append(node)
        for user in users:
            dropped.append(user)
            rename[user.output[0]] = node.input[0]
    if not dropped:
        return 0

    def source(name: str) -> str:
        while name in rename:  # back-to-back round trips
            name = rename[name]
        return name

    keep = [n for n in graph.node if all(n is not d for d in dropped)]
    for node in keep:
        node.input[:] = [source(name) for name in node.input]
    for out in graph.output:  # a fp32 graph output fed by a round trip keeps its name
        if out.name in rename:
            keep.append(onnx.helper.make_node("Identity", [source(out.name)], [out.name], name=f"{out.name}_fp32"))
    del graph.node[:]
    graph.node.extend(keep)
    return len(dropped)


def _is_cast(node: onnx.NodeProto, to: int) -> bool:
    return node.op_type == "Cast" and any(a.name == "to" and a.i == to for a in node.attribute)


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    return types


def _domain(node: onnx.NodeProto) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def _load(src: Path, mode: str) -> onnx.ModelProto:
    try:
        return onnx.load(str(src))
    except Exception as exc:
        raise QuantizationError(f"{mode}: cannot read {src} as an ONNX model: {_first_line(exc)}") from exc


def _check_loads(path: Path, what: str, *, optimize: bool = True) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise QuantizationError(
            f"{what}: the result does not load in onnxruntime: {_first_line(exc)}; try another mode"
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
    """Drop root-logger records containing ``text`` (advice that does not apply here)."""

    def keep(record: logging.LogRecord) -> bool:
        return text not in str(record.msg)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 300 else f"{line[:297]}..."

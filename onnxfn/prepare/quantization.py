"""Shrink an ONNX model for Lambda: int8 weights (dynamic, static QDQ), 4- or 8-bit weight blocks,
fp16 weights, or as is.

``quantize`` is what ``onnxfn add`` calls; it writes the model atomically and returns the facts the
manifest records. ``preoptimize`` saves onnxruntime's optimized graph so a cold start can skip
graph optimization. Both check that the result loads in onnxruntime on CPU before returning.
The modes themselves are in ``onnxfn.prepare.static``, ``blockwise`` and ``fp16``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from onnxfn.errors import UserError
from onnxfn.prepare.blockwise import BlockOptions, quantize_blockwise
from onnxfn.prepare.calibration import CalibrationError
from onnxfn.prepare.fp16 import convert_fp16
from onnxfn.prepare.int8 import quantize_dynamic_int8
from onnxfn.prepare.static import WEIGHT_OPS, quantize_static_qdq, weight_nodes

MODES = ("dynamic", "static", "blockwise", "fp16", "none")
CHOICES = ("auto", *MODES)  # auto: onnxfn.prepare.recipes chooses one from the graph
OPTIMIZATION_LEVELS = ("basic", "extended")


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
    block: BlockOptions | None = None,
) -> dict[str, Any]:
    """Write ``src`` quantized with ``mode`` to ``dst`` and return the facts for the manifest.

    ``dynamic``: int8 MatMul weights, activations quantized per call (no data needed). ``static``:
    QDQ with activation scales fixed by ``calibration``, leaving in fp32 the MatMuls that static
    scales wreck. ``blockwise``: MatMul weights as 4- or 8-bit blocks (``MatMulNBits``) and
    embedding tables by rows (``block``). ``fp16``: float16 weights, fp32 compute wherever onnxruntime's CPU provider
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
    block
        ``blockwise`` only: bits, block size, accuracy level and embeddings (defaults: ``BlockOptions()``).

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
    block = block or BlockOptions()
    if mode == "blockwise" and block.problems():
        raise QuantizationError("; ".join(block.problems()))
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
                part, candidates = quantize_static_qdq(src, staged, model, excluded, per_channel, calibration, op_types)
            elif mode == "blockwise":
                part, candidates = quantize_blockwise(model, staged, excluded, block)
            elif mode == "fp16":
                part = convert_fp16(model, staged, excluded)
            else:
                shutil.copyfile(src, staged)
                part = {"weight_type": "FLOAT", "excluded_nodes": [], "quantized_nodes": 0}
        except QuantizationError:
            raise
        except CalibrationError as exc:
            raise QuantizationError(f"static: {exc}") from exc
        except Exception as exc:
            raise QuantizationError(
                f"{mode} quantization of {src.name} failed: {first_line(exc)}; "
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
            raise QuantizationError(f"{level} optimization of {src.name} failed: {first_line(exc)}") from exc
        _check_loads(staged, f"{level} optimization", shown=dst.name, optimize=False)
    return {"optimization_level": level, "bytes": dst.stat().st_size}


def _dynamic(
    src: Path, staged: Path, model: onnx.ModelProto, excluded: list[str], per_channel: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    candidates = weight_nodes(model, ("MatMul",), excluded)
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


def _load(src: Path, mode: str) -> onnx.ModelProto:
    try:
        return onnx.load(str(src))
    except Exception as exc:
        raise QuantizationError(f"{mode}: cannot read {src} as an ONNX model: {first_line(exc)}") from exc


def _check_loads(path: Path, what: str, *, shown: str, optimize: bool = True) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        problem = first_line(exc).replace(str(path), shown)  # name dst, not the temporary file
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


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 300 else f"{line[:297]}..."

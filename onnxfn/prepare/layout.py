"""How a model's tensors are laid out, and samples that follow the layout.

Every tensor has a batch axis: the axis that counts a request's rows. It is axis 0 for most models;
a recurrent state such as silero-vad's ``[2, batch, 128]`` counts rows on axis 1; a scalar (``sr``)
or a fixed table has none and is passed whole. The axis is read from the graph: the symbolic name
the first input's axis 0 carries (``batch``, ``N``) marks the batch axis of every tensor that has
it; ``--batch-axis NAME=AXIS|none`` says it where the graph cannot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from handlers.runtime.datatypes import OIP_TO_NUMPY
from onnxfn.errors import UserError
from onnxfn.prepare.validation import Feeds

ONNX_TO_OIP = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.STRING: "BYTES",
}
SAMPLE_ROWS = 64
ROWS_PER_SAMPLE = 8


class LayoutError(UserError, ValueError):
    """A tensor's layout cannot be read or does not fit what was asked."""


def _tensor_specs(values: Any) -> list[dict[str, Any]]:
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        if tensor.elem_type not in ONNX_TO_OIP:
            raise LayoutError(f"tensor {value.name!r} has ONNX type {tensor.elem_type}, which onnxfn cannot serve")
        if not tensor.HasField("shape"):  # rank unknown: one dynamic dimension, the batch
            dims, names = [-1], [""]
        else:
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim]
            names = [d.dim_param if d.HasField("dim_param") else "" for d in tensor.shape.dim]
        specs.append({"name": value.name, "datatype": ONNX_TO_OIP[tensor.elem_type], "shape": dims, "_dims": names})
    return specs


def _batch_name(inputs: list[dict[str, Any]]) -> str:
    """The symbolic name most inputs carry on axis 0: the graph's name for the batch."""
    firsts = Counter(spec["_dims"][0] for spec in inputs if spec["_dims"] and spec["_dims"][0])
    return firsts.most_common(1)[0][0] if firsts else ""


def _axis(spec: dict[str, Any], batch: str) -> int | None:
    if not spec["shape"]:
        return None
    if batch and batch in spec["_dims"]:
        return int(spec["_dims"].index(batch))
    return 0


def graph_io(model: onnx.ModelProto) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The graph's inputs (weights left out) and outputs as manifest tensors, each with its batch axis."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = _tensor_specs([i for i in model.graph.input if i.name not in initializers])
    if not inputs:
        raise LayoutError("the model has no inputs; expected at least one graph input that is not a weight")
    outputs = _tensor_specs(model.graph.output)
    batch = _batch_name(inputs)
    for spec in (*inputs, *outputs):
        spec["batch_axis"] = _axis(spec, batch)
        del spec["_dims"]
    return inputs, outputs


def parse_batch_axes(text: str) -> dict[str, int | None]:
    """``--batch-axis state=1,sr=none``."""
    axes: dict[str, int | None] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise LayoutError(f"--batch-axis {part!r}: expected NAME=AXIS or NAME=none, e.g. state=1,sr=none")
        if value.lower() == "none":
            axes[name] = None
        elif value.isdigit():
            axes[name] = int(value)
        else:
            raise LayoutError(f"--batch-axis {part!r}: the axis is a number (0, 1, …) or none")
    return axes


def apply_batch_axes(specs: list[dict[str, Any]], axes: Mapping[str, int | None]) -> None:
    """Set the batch axes the user gave, checking each names a tensor and an axis it has."""
    for spec in specs:
        if spec["name"] in axes:
            axis = axes[spec["name"]]
            if axis is not None and axis >= len(spec["shape"]):
                raise LayoutError(f"--batch-axis {spec['name']}={axis}: the tensor's shape is {spec['shape']}")
            spec["batch_axis"] = axis


def fixed_batch(specs: list[dict[str, Any]]) -> int | None:
    """The batch size the model was exported with, if an input fixes it (often 1)."""
    sizes = {s["shape"][s["batch_axis"]] for s in specs if s.get("batch_axis") is not None}
    fixed = {size for size in sizes if size > 0}
    return min(fixed) if fixed else None


def model_inputs(specs: list[dict[str, Any]]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    return {s["name"]: (OIP_TO_NUMPY[s["datatype"]], tuple(s["shape"])) for s in specs}


def _random(rng: np.random.Generator, spec: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    dtype = OIP_TO_NUMPY[spec["datatype"]]
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 10, shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    raise LayoutError(f"input {spec['name']!r} is {spec['datatype']}: samples cannot be generated, give --samples FILE")


def random_samples(specs: list[dict[str, Any]], rows: int = SAMPLE_ROWS, seed: int = 0) -> list[Feeds]:
    """Sample feeds generated from the input schema: rows on each input's batch axis (as many as the
    model's fixed batch allows), tensors without a batch axis whole. Dynamic dimensions other than the
    batch cannot be guessed: those need ``--samples``."""
    rng = np.random.default_rng(seed)
    per_feed = fixed_batch(specs) or ROWS_PER_SAMPLE
    if all(s.get("batch_axis", 0) is None for s in specs):
        per_feed = 1
    feeds: list[Feeds] = []
    for _ in range(max(1, rows // per_feed)):
        feed: Feeds = {}
        for spec in specs:
            axis = spec.get("batch_axis", 0)
            shape = list(spec["shape"])
            if axis is not None:
                shape[axis] = per_feed
            if any(d == -1 for d in shape):
                raise LayoutError(
                    f"input {spec['name']!r} has a dynamic dimension besides its batch axis ({spec['shape']}); "
                    "samples cannot be generated for it: give --samples FILE (JSON Lines of requests, .npy or .npz)"
                )
            feed[spec["name"]] = _random(rng, spec, tuple(shape))
        feeds.append(feed)
    return feeds

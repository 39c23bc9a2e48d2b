"""The model manifest: one typed, versioned schema shared by the CLI, the stacks and the handlers.

``model_artifacts/<name>/manifest.json`` describes what a model is (files and their sha256), what a
client sends and receives (OIP tensors), its limits, the pipeline around it and the facts of its
quantization. It is parsed strictly: a wrong field is reported with its path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contract.fields import ManifestError, boolean, integer, mapping, only, req, string
from contract.pipelines import (
    PIPELINE_KINDS,
    PIPELINES,
    ClassificationPipeline,
    CustomPipeline,
    ImagePipeline,
    Pipeline,
    TextEmbeddingPipeline,
)
from contract.quoting import quote

__all__ = [
    "PIPELINE_KINDS",
    "ClassificationPipeline",
    "CustomPipeline",
    "FileEntry",
    "ImagePipeline",
    "Limits",
    "Manifest",
    "ManifestError",
    "OnnxFacts",
    "Pipeline",
    "TensorSpec",
    "TextEmbeddingPipeline",
]

SCHEMA_VERSION = 1
# The Open Inference Protocol's datatypes (the handlers map them to numpy dtypes).
OIP_DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
FILE_ROLES = ("model", "tokenizer", "code", "other")  # code: a custom pipeline's module


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    path: str
    role: str
    sha256: str
    bytes: int


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    """A tensor as a client sees it: OIP datatype and shape, -1 for a dynamic dimension.

    ``batch_axis`` is the axis that counts a request's rows: 0 for the usual batch-first tensor, another
    axis for state tensors such as ``[2, batch, 128]``, or None for a tensor with no batch (a scalar,
    a fixed table) that is passed as it comes. A scalar has the shape ``[]``.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    batch_axis: int | None = 0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.batch_axis != default_batch_axis(self.shape):
            data["batch_axis"] = self.batch_axis
        return data

    def batch_of(self, shape: Sequence[int]) -> int | None:
        """The number of rows a tensor of ``shape`` holds; None when this tensor has no batch axis."""
        return None if self.batch_axis is None else int(shape[self.batch_axis])

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model was exported with, when it is fixed (often 1)."""
        if self.batch_axis is None or self.shape[self.batch_axis] < 0:
            return None
        return self.shape[self.batch_axis]


def default_batch_axis(shape: Sequence[int]) -> int | None:
    """Axis 0, the usual batch axis; none for a scalar."""
    return 0 if shape else None


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_batch: int = 64
    max_elements: int = 1_048_576
    allow_non_finite: bool = False  # inf and NaN in float inputs: rejected with a 400 unless the model wants them


@dataclass(frozen=True, kw_only=True)
class OnnxFacts:
    opset: int
    ir_version: int | None = None
    producer: str | None = None
    optimization_level: str | None = None


@dataclass(frozen=True, kw_only=True)
class Manifest:
    schema_version: int
    name: str
    version: str
    files: tuple[FileEntry, ...]
    onnx: OnnxFacts
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    limits: Limits = field(default_factory=Limits)
    pipeline: Pipeline | None = None
    quantization: Mapping[str, Any] | None = None
    validation: Mapping[str, Any] | None = None
    description: str = ""
    pruning: Mapping[str, Any] | None = None  # onnxfn add --prune: what was removed, and how it was ranked
    platform: str = "onnxruntime_onnx"

    @property
    def model_file(self) -> FileEntry:
        return next(f for f in self.files if f.role == "model")

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise ManifestError(f"files: no entry for {path!r}")

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    @property
    def batch_first(self) -> bool:
        """Every input and output counts rows on axis 0: rows from several requests stack into one run."""
        return all(t.batch_axis == 0 for t in (*self.inputs, *self.outputs))

    @property
    def rows_per_run(self) -> int:
        """The most rows one ``session.run`` takes: the batch limit, or the batch the model was exported with."""
        fixed = [t.fixed_batch for t in self.inputs if t.fixed_batch is not None]
        return min([self.limits.max_batch, *fixed])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["inputs"] = [t.to_dict() for t in self.inputs]
        if not self.limits.allow_non_finite:
            del data["limits"]["allow_non_finite"]
        data["outputs"] = [t.to_dict() for t in self.outputs]
        if data["pruning"] is None:
            del data["pruning"]
        if data["pipeline"] is not None:
            data["pipeline"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data["pipeline"].items()}
            if isinstance(self.pipeline, CustomPipeline):
                data["pipeline"]["options"] = dict(self.pipeline.options)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        return _parse_manifest(data)

    @classmethod
    def loads(cls, raw: bytes | str) -> Manifest:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # also: undecodable bytes, over 4,300 digits, nested too deep
            raise ManifestError(f"manifest is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from exc
        return _parse_manifest(data)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls.loads(path.read_bytes())


# --- strict parsing -------------------------------------------------------------------------


def _pipeline(data: Any) -> Pipeline | None:
    if data is None:
        return None
    fields = mapping(data, "pipeline")
    kind = string(req(fields, "kind", "pipeline"), "pipeline.kind")
    if kind not in PIPELINES:
        raise ManifestError(f"pipeline.kind: expected one of {', '.join(PIPELINE_KINDS)}, got {kind!r}")
    return PIPELINES[kind](fields)


def _version(value: Any) -> str:
    """The model version: a string, or a bare number taken as its text ("version": 2)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    return string(value, "manifest.version", VERSION_PATTERN)


def _tensor(data: Any, where: str) -> TensorSpec:
    obj = mapping(data, where)
    only(obj, where, ("name", "datatype", "shape", "batch_axis"))
    datatype = string(req(obj, "datatype", where), f"{where}.datatype")
    if datatype not in OIP_DATATYPES:
        raise ManifestError(f"{where}.datatype: expected one of {', '.join(OIP_DATATYPES)}, got {datatype!r}")
    shape = req(obj, "shape", where)
    if not isinstance(shape, list):
        raise ManifestError(f"{where}.shape: expected a list of integers (-1 = dynamic, [] = a scalar)")
    dims = tuple(integer(d, f"{where}.shape[{i}]", minimum=-1) for i, d in enumerate(shape))
    if 0 in dims:
        raise ManifestError(f"{where}.shape: dimensions must be positive or -1, got {list(dims)}")
    axis = obj.get("batch_axis", default_batch_axis(dims))
    if axis is not None:
        axis = integer(axis, f"{where}.batch_axis")
        if axis >= len(dims):
            raise ManifestError(
                f"{where}.batch_axis: {axis} is not an axis of shape {list(dims)}; expected one, or null"
            )
    return TensorSpec(
        name=string(req(obj, "name", where), f"{where}.name"), datatype=datatype, shape=dims, batch_axis=axis
    )


def _tensors(data: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(data, list) or not data:
        raise ManifestError(f"{where}: expected a non-empty list of tensors")
    specs = tuple(_tensor(t, f"{where}[{i}]") for i, t in enumerate(data))
    names = [t.name for t in specs]
    if len(set(names)) != len(names):
        raise ManifestError(f"{where}: tensor names must be unique, got {names}")
    return specs


def _file(data: Any, where: str) -> FileEntry:
    obj = mapping(data, where)
    only(obj, where, ("path", "role", "sha256", "bytes"))
    path = string(req(obj, "path", where), f"{where}.path")
    if path.startswith("/") or ".." in Path(path).parts or not path:
        raise ManifestError(f"{where}.path: expected a relative path inside the artifact folder, got {path!r}")
    role = string(obj.get("role", "other"), f"{where}.role")
    if role not in FILE_ROLES:
        raise ManifestError(f"{where}.role: expected one of {', '.join(FILE_ROLES)}, got {role!r}")
    return FileEntry(
        path=path,
        role=role,
        sha256=string(req(obj, "sha256", where), f"{where}.sha256", SHA256_PATTERN),
        bytes=integer(req(obj, "bytes", where), f"{where}.bytes"),
    )


_TOP_LEVEL = (
    "schema_version",
    "name",
    "version",
    "description",
    "platform",
    "files",
    "onnx",
    "inputs",
    "outputs",
    "limits",
    "pipeline",
    "quantization",
    "pruning",
    "validation",
)


def _parse_manifest(data: Any) -> Manifest:
    obj = mapping(data, "manifest")
    version = req(obj, "schema_version", "manifest")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"manifest.schema_version: this runtime reads version {SCHEMA_VERSION}, got {quote(version)}"
        )
    only(obj, "manifest", _TOP_LEVEL)
    files_raw = req(obj, "files", "manifest")
    if not isinstance(files_raw, list) or not files_raw:
        raise ManifestError("manifest.files: expected a non-empty list")
    files = tuple(_file(f, f"manifest.files[{i}]") for i, f in enumerate(files_raw))
    if sum(f.role == "model" for f in files) != 1:
        raise ManifestError("manifest.files: expected exactly one file with role 'model'")
    onnx_obj = mapping(req(obj, "onnx", "manifest"), "manifest.onnx")
    only(onnx_obj, "manifest.onnx", ("opset", "ir_version", "producer", "optimization_level"))
    ir_version = onnx_obj.get("ir_version")
    limits_obj = mapping(obj.get("limits", {}), "manifest.limits")
    only(limits_obj, "manifest.limits", ("max_batch", "max_elements", "allow_non_finite"))
    for key in ("quantization", "pruning", "validation"):
        if obj.get(key) is not None:
            mapping(obj[key], f"manifest.{key}")
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=string(req(obj, "name", "manifest"), "manifest.name", NAME_PATTERN),
        version=_version(req(obj, "version", "manifest")),
        description=string(obj.get("description", ""), "manifest.description"),
        platform=string(obj.get("platform", "onnxruntime_onnx"), "manifest.platform"),
        files=files,
        onnx=OnnxFacts(
            opset=integer(req(onnx_obj, "opset", "manifest.onnx"), "manifest.onnx.opset", minimum=1),
            ir_version=None if ir_version is None else integer(ir_version, "manifest.onnx.ir_version"),
            producer=onnx_obj.get("producer"),
            optimization_level=onnx_obj.get("optimization_level"),
        ),
        inputs=_tensors(req(obj, "inputs", "manifest"), "manifest.inputs"),
        outputs=_tensors(req(obj, "outputs", "manifest"), "manifest.outputs"),
        limits=Limits(
            max_batch=integer(limits_obj.get("max_batch", Limits.max_batch), "manifest.limits.max_batch", 1),
            max_elements=integer(
                limits_obj.get("max_elements", Limits.max_elements), "manifest.limits.max_elements", 1
            ),
            allow_non_finite=boolean(limits_obj.get("allow_non_finite", False), "manifest.limits.allow_non_finite"),
        ),
        pipeline=_pipeline(obj.get("pipeline")),
        quantization=obj.get("quantization"),
        pruning=obj.get("pruning"),
        validation=obj.get("validation"),
    )
    for path in manifest.pipeline.files if manifest.pipeline else ():
        manifest.file(path)
    return manifest

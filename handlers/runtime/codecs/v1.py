"""TF Serving / KServe V1 predict: ``{"instances": [...]}`` (row format) -> ``{"predictions": [...]}``
and ``{"inputs": ...}`` (columnar format) -> ``{"outputs": ...}``, as TF Serving answers them.

For a single-input model an instance is the value itself; otherwise an object keyed by input name.
BYTES values are strings or ``{"b64": "..."}``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from contract.manifest import Manifest, TensorSpec
from handlers.runtime.codecs.oip import parse_json_object
from handlers.runtime.codecs.tensors import array_from_json, check_finite, check_limits, check_shape
from handlers.runtime.errors import InvalidInput


def _shape_of(value: Any, depth: int) -> list[int]:
    """Dimensions of nested lists, following first elements (raggedness is caught on conversion)."""
    shape: list[int] = []
    for _ in range(depth):
        if not isinstance(value, list):
            break
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _text(value: Any, label: str, depth: int) -> Any:
    """BYTES values as text (``{"b64": ...}`` decoded), following lists at most ``depth`` levels deep."""
    if isinstance(value, list):
        if depth <= 0:
            raise InvalidInput(f'{label}: lists nest deeper than its shape; expected strings or {{"b64": "..."}}')
        return [_text(v, label, depth - 1) for v in value]
    if isinstance(value, Mapping):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise InvalidInput(f'{label}: a BYTES value is a string or {{"b64": "..."}}')
        try:
            data = base64.b64decode(value["b64"], validate=True)
        except ValueError as exc:  # binascii.Error, and non-ASCII characters
            raise InvalidInput(f"{label}: b64 value is not base64") from exc
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data  # binary content (an image): kept as bytes
    return value


def _column(spec: TensorSpec, batch: Any) -> tuple[tuple[int, ...], Any]:
    label = f'input "{spec.name}"'
    if not spec.shape:  # a scalar: the value itself
        if isinstance(batch, list | Mapping):
            raise InvalidInput(f"{label}: expected one {spec.datatype} value (a scalar), got a list or object")
        return (), _text(batch, label, 0) if spec.datatype == "BYTES" else batch
    if not isinstance(batch, list) or not batch:
        raise InvalidInput(f"{label}: expected a non-empty list with one entry per instance")
    if spec.datatype == "BYTES":
        batch = _text(batch, label, len(spec.shape))
    shape = _shape_of(batch, len(spec.shape))
    return check_shape(spec, shape), batch


def decode_predict_request(body: bytes, manifest: Manifest) -> tuple[str, dict[str, np.ndarray]]:
    """The request's format (``instances`` or ``inputs``) and its checked input arrays."""
    return decode_predict_document(parse_json_object(body, "predict request"), manifest)


def decode_predict_document(document: Mapping[str, Any], manifest: Manifest) -> tuple[str, dict[str, np.ndarray]]:
    """As ``decode_predict_request``, for a document already parsed (a JSON Lines record, say)."""
    formats = [key for key in ("instances", "inputs") if key in document]
    if len(formats) != 1:
        raise InvalidInput('predict request: expected exactly one of {"instances": [...]} or {"inputs": ...}')
    fmt = formats[0]
    names = [t.name for t in manifest.inputs]
    columns: dict[str, Any]
    if fmt == "instances" and not manifest.batch_first:
        whole = ", ".join(f'"{t.name}" {list(t.shape)}' for t in manifest.inputs if t.batch_axis != 0)
        raise InvalidInput(
            f'"instances" stacks rows on axis 0, but this model also takes {whole}, which are not batch-first; '
            'send {"inputs": {...}} with each tensor whole'
        )
    if fmt == "instances":
        instances = document["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidInput('"instances": expected a non-empty list, one entry per instance')
        bare = [i for i in instances if not isinstance(i, Mapping) or set(i) == {"b64"}]
        if len(names) == 1 and len(bare) == len(instances) and names != ["b64"]:
            # a bare value per instance ({"b64": ...} included)
            columns = {names[0]: instances}
        else:
            columns = {name: [] for name in names}
            for index, instance in enumerate(instances):
                if not isinstance(instance, Mapping) or set(instance) != set(names):
                    raise InvalidInput(f"instances[{index}]: expected an object with exactly the keys {names}")
                for name in names:
                    columns[name].append(instance[name])
    else:
        given = document["inputs"]
        if isinstance(given, Mapping):
            if set(given) != set(names):
                raise InvalidInput(f'"inputs": expected exactly the keys {names}, got {sorted(given)}')
            columns = dict(given)
        elif len(names) == 1:
            columns = {names[0]: given}
        else:
            raise InvalidInput(f'"inputs": this model has several inputs; send an object keyed by {names}')
    planned = {}
    for spec in manifest.inputs:
        planned[spec.name] = (spec, *_column(spec, columns[spec.name]))
    check_limits({name: shape for name, (_, shape, _) in planned.items()}, manifest)
    arrays = {
        name: check_finite(spec, array_from_json(spec, shape, data), manifest.limits)
        for name, (spec, shape, data) in planned.items()
    }
    return fmt, arrays


def _plain(value: Any) -> Any:
    """JSON-ready form of an output row: lists of numbers; BYTES as text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode_predict_response(fmt: str, outputs: Sequence[str], results: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Row format answers ``predictions`` (a value per instance); columnar answers ``outputs``."""
    if fmt == "inputs":
        if len(outputs) == 1:
            return {"outputs": _plain(results[outputs[0]])}
        return {"outputs": {name: _plain(results[name]) for name in outputs}}
    rows = len(results[outputs[0]])
    if len(outputs) == 1:
        return {"predictions": [_plain(results[outputs[0]][i]) for i in range(rows)]}
    return {"predictions": [{name: _plain(results[name][i]) for name in outputs} for i in range(rows)]}

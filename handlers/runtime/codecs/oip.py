"""Open Inference Protocol (KServe V2) infer requests and responses, JSON and binary tensor extension.

Binary extension: the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed
by the tensors named with ``parameters.binary_data_size``, in the order the header lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract.manifest import Manifest
from contract.quoting import quote
from handlers.runtime import jsonio
from handlers.runtime.codecs.tensors import (
    array_from_bytes,
    array_from_json,
    check_finite,
    check_limits,
    check_shape,
    to_binary,
    to_json_data,
)
from handlers.runtime.errors import InvalidInput

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[str]
    binary_outputs: set[str] = field(default_factory=set)


def _header_length(value: str | None, body_length: int) -> int | None:
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError as exc:
        raise InvalidInput(f"{HEADER_LENGTH}: expected an integer byte count, got {quote(value)}") from exc
    if not 0 < length <= body_length:
        raise InvalidInput(f"{HEADER_LENGTH}: {length} is outside the body's {body_length} bytes")
    return length


def parse_json_object(raw: bytes | memoryview, what: str = "request body") -> dict[str, Any]:
    try:
        data = jsonio.loads(raw)
    except (jsonio.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _parameters(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    params = obj.get("parameters", {})
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise InvalidInput(f'{where}: "parameters" must be an object')
    return params


def _binary_size(params: Mapping[str, Any], where: str) -> int | None:
    size = params.get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput(f"{where}: binary_data_size must be a non-negative integer, got {quote(size)}")
    return size


def decode_infer_request(body: bytes, header_length: str | None, manifest: Manifest) -> InferRequest:
    """Parse and check an infer request against the manifest; arrays are created only after every check."""
    length = _header_length(header_length, len(body))
    view = memoryview(body)
    header = parse_json_object(view if length is None else view[:length], "inference request")
    binary = view[length:] if length is not None else view[len(body) :]

    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f'"id" must be a string, got {type(request_id).__name__}')
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        expected = ", ".join(f'"{t.name}" ({t.datatype} {list(t.shape)})' for t in manifest.inputs)
        raise InvalidInput(f'"inputs" must be a non-empty list of tensors; this model expects {expected}')

    # Pass 1: names, datatypes, shapes, limits, sizes — nothing allocated yet.
    plans: list[tuple[Any, tuple[int, ...], Mapping[str, Any], int | None]] = []
    seen: set[str] = set()
    for index, item in enumerate(raw_inputs):
        if not isinstance(item, Mapping):
            raise InvalidInput(f"inputs[{index}]: expected a tensor object with name, shape, datatype and data")
        name = item.get("name")
        spec = manifest.input(name) if isinstance(name, str) else None
        if spec is None:
            expected_names = ", ".join(f'"{t.name}"' for t in manifest.inputs)
            raise InvalidInput(f"inputs[{index}]: unknown input {quote(name)}; this model expects {expected_names}")
        if spec.name in seen:
            raise InvalidInput(f'input "{spec.name}" appears more than once')
        seen.add(spec.name)
        datatype = item.get("datatype")
        if datatype != spec.datatype:
            raise InvalidInput(f'input "{name}": expected datatype {spec.datatype}, got {quote(datatype)}')
        shape = check_shape(spec, item.get("shape"))
        size = _binary_size(_parameters(item, f'input "{name}"'), f'input "{name}"')
        if size is None and "data" not in item:
            raise InvalidInput(f'input "{name}": has neither "data" nor parameters.binary_data_size')
        if size is not None and length is None:
            raise InvalidInput(f'input "{name}": binary_data_size given without the {HEADER_LENGTH} header')
        plans.append((spec, shape, item, size))
    missing = [t.name for t in manifest.inputs if t.name not in seen]
    if missing:
        raise InvalidInput(f"missing input(s) {', '.join(repr(m) for m in missing)}")
    check_limits({spec.name: shape for spec, shape, _, _ in plans}, manifest)
    declared = sum(size or 0 for *_, size in plans)
    if declared != len(binary):
        raise InvalidInput(
            f"binary section holds {len(binary)} bytes but the inputs declare {declared} in binary_data_size"
        )

    # Pass 2: build arrays.
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for spec, shape, item, size in plans:
        if size is not None:
            inputs[spec.name] = array_from_bytes(spec, shape, binary[offset : offset + size])
            offset += size
        else:
            inputs[spec.name] = array_from_json(spec, shape, item.get("data"))
        check_finite(spec, inputs[spec.name], manifest.limits)

    outputs, binary_outputs = _requested_outputs(header, manifest)
    return InferRequest(id=request_id, inputs=inputs, outputs=outputs, binary_outputs=binary_outputs)


def _requested_outputs(header: Mapping[str, Any], manifest: Manifest) -> tuple[list[str], set[str]]:
    all_binary = _parameters(header, "request").get("binary_data_output", False) is True
    raw = header.get("outputs")
    if raw is None:
        names = [t.name for t in manifest.outputs]
        return names, set(names) if all_binary else set()
    if not isinstance(raw, list):
        raise InvalidInput('"outputs" must be a list of {"name": ...} objects')
    names, binary = [], set()
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or manifest.output(name) is None:
            expected = ", ".join(f'"{t.name}"' for t in manifest.outputs)
            raise InvalidInput(f"outputs[{index}]: unknown output {quote(name)}; this model offers {expected}")
        if name in names:
            raise InvalidInput(f'output "{name}" is requested more than once')
        names.append(name)
        flag = _parameters(item, f'output "{name}"').get("binary_data", all_binary)
        if flag is True:
            binary.add(name)
    return names, binary


def encode_infer_response(
    manifest: Manifest, request: InferRequest, results: Mapping[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON, or the JSON header plus binary tensors when asked."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name in request.outputs:
        spec = manifest.output(name)
        assert spec is not None  # checked when the request was decoded
        array = results[name]
        entry: dict[str, Any] = {"name": name, "datatype": spec.datatype, "shape": list(array.shape)}
        if name in request.binary_outputs:
            chunk = to_binary(array, spec.datatype)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = to_json_data(array, spec.datatype)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": manifest.name, "model_version": manifest.version}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = outputs
    header = jsonio.dumps(document)
    if not chunks:
        return header, {"Content-Type": JSON_CONTENT_TYPE}
    return header + b"".join(chunks), {
        "Content-Type": BINARY_CONTENT_TYPE,
        HEADER_LENGTH: str(len(header)),
    }

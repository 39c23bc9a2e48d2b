"""One OpenAPI document for the whole API: every route with a ``{model}`` parameter written out once
per model of the catalog, tagged with the model's name (Swagger UI shows one section a model and
filters by it), with that model's input and output names and datatypes in its schemas, a request
example built from its manifest, and its own auth.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

from contract.catalog import CatalogEntry
from contract.manifest import Manifest, TensorSpec

SERVER_TAG = "server"
EXAMPLE_ELEMENTS = 4096  # an input larger than this gets no example data (an image as tensors)
SIGNED = "Requests are signed with AWS Signature Version 4 (IAM); Swagger UI cannot sign them."
SIGV4_SCHEME = "sigv4"
# API Gateway's own way of declaring IAM authorization in OpenAPI (its exports write the same).
SIGV4 = {
    "type": "apiKey",
    "name": "Authorization",
    "in": "header",
    "x-amazon-apigateway-authtype": "awsSigv4",
    "description": "AWS Signature Version 4 for service execute-api (AWS SDKs, awscurl)",
}


def expand(document: dict[str, Any], catalog: Sequence[CatalogEntry]) -> dict[str, Any]:
    """``document`` (the routes with ``{model}``) written out for each model of ``catalog``.

    An operation of a model with ``auth: iam`` (and a server route, when the first model has it: those
    go to its function) requires the SigV4 scheme instead of the document's API key.
    """
    paths: dict[str, Any] = {}
    for path, operations in document.get("paths", {}).items():
        if "{model}" not in path:
            first = catalog[0].auth
            paths[path] = {verb: _signed({**op, "tags": [SERVER_TAG]}, first) for verb, op in operations.items()}
            continue
        for entry in catalog:
            paths[path.replace("{model}", entry.name)] = {
                verb: _operation(op, entry, path) for verb, op in operations.items()
            }
    document["paths"] = paths
    document["tags"] = [{"name": entry.name, "description": _summary(entry)} for entry in catalog]
    document["tags"].append({"name": SERVER_TAG, "description": "Server metadata and health"})
    if any(entry.auth == "iam" for entry in catalog):
        document.setdefault("components", {}).setdefault("securitySchemes", {})[SIGV4_SCHEME] = SIGV4
    return document


def _signed(op: dict[str, Any], auth: str) -> dict[str, Any]:
    if auth == "iam":
        op["security"] = [{SIGV4_SCHEME: []}]
        op["description"] = f"{op.get('description', '')}\n\n{SIGNED}".strip()
    return op


def _summary(entry: CatalogEntry) -> str:
    manifest = entry.manifest

    def tensors(specs: Sequence[TensorSpec]) -> str:
        return ", ".join(f"`{t.name}` {t.datatype} {list(t.shape)}" for t in specs)

    parts = [manifest.description] if manifest.description else []
    parts.append(f"version {manifest.version}; inputs {tensors(manifest.inputs)}; outputs {tensors(manifest.outputs)}")
    if manifest.pipeline is not None:
        parts.append(f"pipeline {manifest.pipeline.kind}")
    if entry.auth == "iam":
        parts.append(SIGNED)
    return ". ".join(parts)


def _operation(operation: dict[str, Any], entry: CatalogEntry, path: str) -> dict[str, Any]:
    op = copy.deepcopy(operation)
    op["tags"] = [entry.name]
    if "operationId" in op:
        op["operationId"] = f"{op['operationId']}_{entry.name}"
    parameters = [p for p in op.get("parameters", []) if not (p.get("in") == "path" and p.get("name") == "model")]
    for parameter in parameters:
        if parameter.get("in") == "path" and parameter.get("name") == "version":
            parameter["schema"] = {"type": "string", "enum": [entry.manifest.version]}
    if parameters:
        op["parameters"] = parameters
    else:
        op.pop("parameters", None)
    _signed(op, entry.auth)
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    image = entry.manifest.pipeline is not None and entry.manifest.pipeline.kind.startswith("image")
    if body is not None and image:
        body.pop("example", None)  # an encoded image: no text stands in for one
    elif body is not None:
        if path.endswith("/infer"):
            _infer_body(body, entry.manifest)
        elif path.endswith(":predict"):
            _predict_body(body, entry.manifest)
    return op


def _infer_body(body: dict[str, Any], manifest: Manifest) -> None:
    """The model's input and output names and datatypes in the schema; an example request."""
    properties = body.get("schema", {}).get("properties", {})
    tensor = properties.get("inputs", {}).get("items", {}).get("properties")
    if tensor is not None:
        tensor["name"] = {"type": "string", "enum": [t.name for t in manifest.inputs]}
        tensor["datatype"] = {"type": "string", "enum": sorted({t.datatype for t in manifest.inputs})}
    wanted = properties.get("outputs", {}).get("items", {}).get("properties")
    if wanted is not None:
        wanted["name"] = {"type": "string", "enum": [t.name for t in manifest.outputs]}
    inputs = [_example_tensor(spec) for spec in manifest.inputs]
    if all(item is not None for item in inputs):
        body["example"] = {"id": "1", "inputs": inputs}
    else:
        body.pop("example", None)


def _predict_body(body: dict[str, Any], manifest: Manifest) -> None:
    """``{"instances": [row]}`` when every input is batched on its first axis."""
    if not all(spec.batch_axis == 0 for spec in manifest.inputs):
        body.pop("example", None)
        return
    rows = {}
    for spec in manifest.inputs:
        shape = [1 if d < 0 else d for d in spec.shape[1:]]
        if math.prod(shape) > EXAMPLE_ELEMENTS:
            body.pop("example", None)
            return
        rows[spec.name] = _nested(_value(spec.datatype), shape)
    body["example"] = {"instances": [next(iter(rows.values())) if len(rows) == 1 else rows]}


def _example_tensor(spec: TensorSpec) -> dict[str, Any] | None:
    shape = [1 if d < 0 else d for d in spec.shape]
    if spec.batch_axis is not None and shape:
        shape[spec.batch_axis] = 1
    count = math.prod(shape)
    if count > EXAMPLE_ELEMENTS:
        return None
    return {"name": spec.name, "shape": shape, "datatype": spec.datatype, "data": [_value(spec.datatype)] * count}


def _value(datatype: str) -> Any:
    if datatype == "BYTES":
        return "hello world"
    if datatype == "BOOL":
        return False
    return 0.0 if datatype.startswith(("FP", "BF")) else 0


def _nested(value: Any, shape: Sequence[int]) -> Any:
    if not shape:
        return value
    return [_nested(value, shape[1:]) for _ in range(shape[0])]

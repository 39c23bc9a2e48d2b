"""The OpenAPI document and Swagger UI, built on request; and fragments for the routes whose bodies
the handler decodes itself (JSON or binary).

Powertools' ``enable_swagger`` imports its OpenAPI models (pydantic) when it is called, which costs
120-220 ms of every cold start; building the document on the first ``/swagger`` request instead
moves that cost to the one request that needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contract.catalog import CatalogEntry
from contract.environment import API_AUTH
from contract.manifest import OIP_DATATYPES
from handlers.runtime.settings import load_api_auth

TITLE = "onnxfn inference API"

DESCRIPTION = (
    "Open Inference Protocol (KServe V2, as spoken by Triton and tritonclient) with the binary tensor "
    "extension, and TF Serving / KServe V1 predict. Errors are JSON objects with an `error` message."
)

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "datatype": {
            "type": "string",
            "enum": list(OIP_DATATYPES),
        },
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        },
        "data": {"description": "Row-major values, nested or flat; strings for BYTES"},
    },
}

_ERROR = {
    "description": "What was wrong and what was expected",
    "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}},
}

_ERRORS: dict[str, Any] = {
    "400": _ERROR,
    "404": _ERROR,
    "413": _ERROR,
    "503": {**_ERROR, "description": "The model could not be loaded now; retry"},
}

INFER_OPERATION: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_output": {"type": "boolean"}},
                        },
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {
                                        "type": "object",
                                        "properties": {"binary_data": {"type": "boolean"}},
                                    },
                                },
                            },
                        },
                    },
                },
                "example": {
                    "id": "1",
                    "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}],
                },
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "JSON header of Inference-Header-Content-Length bytes, then the binary tensors",
            },
        },
    },
    "x-onnxfn-errors": _ERRORS,
}

PREDICT_OPERATION: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "instances": {"type": "array", "items": {}},
                        "inputs": {},
                        "signature_name": {"type": "string"},
                    },
                },
                "example": {"instances": ["hello world"]},
            }
        },
    },
}


API_KEY_HEADER = "x-api-key"
API_KEY_SCHEME = "apiKey"
API_KEY_NOTE = f" Every request carries the API key in the `{API_KEY_HEADER}` header (in Swagger UI: Authorize)."
MIXED_NOTE = (
    f" Requests carry the API key in the `{API_KEY_HEADER}` header (in Swagger UI: Authorize), except to the"
    " models whose routes say they are signed with AWS Signature Version 4 (IAM), which Swagger UI cannot do."
)
IAM_NOTE = (
    " Every request must be signed with AWS Signature Version 4 by an IAM principal allowed to invoke the API"
    " (AWS SDKs, awscurl); Swagger UI cannot sign requests."
)


def _pin_model(spec: str, model: str | None) -> str:
    """Declare the ``model`` path parameter as the one model this function serves (an enum), so
    Swagger UI offers it and API fuzzers exercise the real routes instead of 404s."""
    if not model:
        return spec
    import json

    document = json.loads(spec)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("name") == "model" and parameter.get("in") == "path":
                    parameter["schema"] = {**parameter.get("schema", {}), "type": "string", "enum": [model]}
    return json.dumps(document)


def document(
    app: Any,
    stage: str | None,
    auth: str | None = None,
    model: str | None = None,
    catalog: Sequence[CatalogEntry] | None = None,
) -> str:
    """The OpenAPI document (JSON) of ``app``'s routes, served under ``stage``.

    ``auth`` (``API_AUTH``'s value when None) says how callers authenticate: ``api_key`` declares the
    ``x-api-key`` header as a security scheme on every operation, so Swagger UI offers "Authorize"
    and sends the key; ``iam`` declares none (Swagger UI cannot sign) and the description says so.
    """
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, Server

    from handlers.runtime.version import __version__

    if catalog:
        modes = {entry.auth for entry in catalog}
        with_key = "api_key" in modes
        note = MIXED_NOTE if len(modes) > 1 else API_KEY_NOTE if with_key else IAM_NOTE
    else:
        with_key = load_api_auth({API_AUTH: auth} if auth is not None else None) == "api_key"
        note = API_KEY_NOTE if with_key else IAM_NOTE
    # `in_` populates the field aliased "in" (populate_by_name); mypy only sees the alias
    api_key = APIKey(name=API_KEY_HEADER, in_=APIKeyIn.header)  # type: ignore[call-arg]
    spec: str = app.get_openapi_json_schema(
        title=TITLE,
        version=__version__,
        description=DESCRIPTION + note,
        servers=[Server(url=f"/{stage}" if stage else "/")],
        security_schemes={API_KEY_SCHEME: api_key} if with_key else None,
        security=[{API_KEY_SCHEME: []}] if with_key else None,
    )
    if catalog:
        import json

        from handlers.runtime.openapi_models import expand

        return json.dumps(expand(json.loads(spec), catalog))
    return _pin_model(spec, model)


def swagger(
    app: Any,
    stage: str | None,
    want_json: bool,
    auth: str | None = None,
    model: str | None = None,
    catalog: Sequence[CatalogEntry] | None = None,
) -> tuple[str, str]:
    """``(content type, body)`` of the OpenAPI document (``want_json``) or the Swagger UI page."""
    from aws_lambda_powertools import event_handler
    from aws_lambda_powertools.event_handler.openapi.swagger_ui.html import generate_swagger_html

    spec = document(app, stage, auth, model, catalog)
    if want_json:
        return "application/json", spec
    assets = Path(event_handler.__file__).parent / "openapi" / "swagger_ui"
    page = generate_swagger_html(
        spec.replace("</", "<\\/"),  # the document sits inside a <script> element
        (assets / "swagger-ui-bundle.min.js").read_text(encoding="utf-8"),
        (assets / "swagger-ui.min.css").read_text(encoding="utf-8"),
        None,  # type: ignore[arg-type]  # None: embed the assets instead of linking a CDN
        None,
        False,
    )
    return "text/html", page

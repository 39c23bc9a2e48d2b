"""OpenAPI fragments for the routes whose bodies the handler decodes itself (JSON or binary)."""

from __future__ import annotations

from typing import Any

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
            "enum": [
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
            ],
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

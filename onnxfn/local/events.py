"""API Gateway REST proxy events (payload format 1.0), built as API Gateway builds them."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

# API Gateway base64-encodes a body whose Content-Type (or Accept) is a binary media type.
DEFAULT_BINARY_MEDIA_TYPES = ("application/octet-stream", "application/vnd.onnxfn.binary")


def is_binary(headers: Mapping[str, str], binary_media_types: tuple[str, ...] = DEFAULT_BINARY_MEDIA_TYPES) -> bool:
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    if content_type in binary_media_types or "*/*" in binary_media_types:
        return True
    # tritonclient sends binary tensors without a Content-Type; the header length marks them.
    return "inference-header-content-length" in lowered and not content_type


def api_gateway_event(
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    query: str = "",
    *,
    stage: str = "prod",
    binary_media_types: tuple[str, ...] = DEFAULT_BINARY_MEDIA_TYPES,
    resource: str = "/{proxy+}",
    path_parameters: dict[str, str] | None = None,
    api_key: str | None = None,
    request_id: str | None = None,
    multi_value_headers: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """A REST proxy event for ``resource`` (default ``/{proxy+}``), the body encoded as API Gateway would."""
    headers = dict(headers or {})
    raw = body.encode("utf-8") if isinstance(body, str) else body
    encoded = raw is not None and is_binary(headers, binary_media_types)
    text: str | None
    if raw is None:
        text = None
    elif encoded:
        text = base64.b64encode(raw).decode("ascii")
    else:
        text = raw.decode("utf-8", "replace")
    pairs = parse_qsl(query, keep_blank_values=True) if query else []
    params = dict(pairs) or None
    multi_params: dict[str, list[str]] = {}
    for key, value in pairs:
        multi_params.setdefault(key, []).append(value)
    request_id = request_id or str(uuid.uuid4())
    if path_parameters is None and resource == "/{proxy+}":
        path_parameters = {"proxy": path.lstrip("/")}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method.upper(),
        "headers": headers,
        "multiValueHeaders": dict(multi_value_headers) if multi_value_headers else {k: [v] for k, v in headers.items()},
        "queryStringParameters": params,
        "multiValueQueryStringParameters": multi_params or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method.upper(),
            "path": f"/{stage}{path}",
            "stage": stage,
            "requestId": request_id,
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent", ""), "apiKey": api_key},
            "protocol": "HTTP/1.1",
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def response_body(response: Mapping[str, Any]) -> bytes:
    """The bytes a client receives for a proxy integration response."""
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        return base64.b64decode(body)
    return str(body).encode("utf-8")


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """The event Lambda's SQS event source mapping builds from ``ReceiveMessage`` results."""
    records = []
    for message in messages:
        attributes = {
            key: message.get("Attributes", {}).get(key, "")
            for key in ("ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp")
        }
        message_attributes = {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value.get("DataType", "String"),
            }
            for name, value in (message.get("MessageAttributes") or {}).items()
        }
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}

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
) -> dict[str, Any]:
    """A REST proxy event for a ``/{proxy+}`` resource, with the body encoded as API Gateway would."""
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
    params = dict(parse_qsl(query)) if query else None
    request_id = str(uuid.uuid4())
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method.upper(),
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": params,
        "multiValueQueryStringParameters": {k: [v] for k, v in params.items()} if params else None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method.upper(),
            "path": f"/{stage}{path}",
            "stage": stage,
            "requestId": request_id,
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent", "")},
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

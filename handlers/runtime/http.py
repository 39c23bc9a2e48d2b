"""The request body of an API Gateway REST proxy event, bounded and decoded."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from contract.quoting import quote
from handlers.runtime.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType


def request_body(event: Mapping[str, Any], max_bytes: int) -> bytes:
    """Raw body bytes; API Gateway base64-encodes binary media types (``isBase64Encoded``)."""
    body = event.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise InvalidInput("request body: expected text in the proxy event")
    encoding = (header(event, "Content-Encoding") or "").strip().lower()
    if encoding not in ("", "identity"):
        # API Gateway passes a compressed body through as it came; nothing here inflates it.
        raise UnsupportedMediaType(
            f"Content-Encoding {quote(encoding)} is not supported; send the body uncompressed (identity)"
        )
    encoded = bool(event.get("isBase64Encoded"))
    # Check the size before decoding: base64 carries 3 bytes in every 4 characters.
    approx = len(body) * 3 // 4 if encoded else len(body)
    if approx > max_bytes:
        raise PayloadTooLarge(f"request body of about {approx} bytes is over the limit of {max_bytes} bytes")
    if not encoded:
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate, escaped in the event's JSON
            raise InvalidInput("request body: expected UTF-8 text, got a lone surrogate") from exc
    else:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput("request body: isBase64Encoded is set but the body is not valid base64") from exc
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body of {len(raw)} bytes is over the limit of {max_bytes} bytes")
    return raw


def header(event: Mapping[str, Any], name: str) -> str | None:
    """A request header by case-insensitive name."""
    headers = event.get("headers") or {}
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return str(value) if value is not None else None
    return None

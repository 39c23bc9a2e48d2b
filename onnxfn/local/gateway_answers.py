"""API Gateway's own answers, rendered from the template's ``AWS::ApiGateway::GatewayResponse``
resources as API Gateway renders them: only ``$context`` variables are substituted (no VTL); a type
without a response of its own falls back to ``DEFAULT_4XX`` / ``DEFAULT_5XX``, then to API Gateway's
built-in ``{"message": ...}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

Answer = tuple[int, dict[str, list[str]], bytes]


@dataclass(frozen=True)
class GatewayError:
    """One of API Gateway's own errors: its response type, default status, message and error type."""

    response_type: str | None  # None: only the DEFAULT_4XX / DEFAULT_5XX responses apply
    status: int
    message: str
    error_type: str


MISSING_ROUTE = GatewayError(
    "MISSING_AUTHENTICATION_TOKEN", 403, "Missing Authentication Token", "MissingAuthenticationTokenException"
)
INVALID_API_KEY = GatewayError("INVALID_API_KEY", 403, "Forbidden", "ForbiddenException")
TOO_LARGE = GatewayError("REQUEST_TOO_LARGE", 413, "Request Too Long", "RequestTooLongException")
TIMED_OUT = GatewayError("INTEGRATION_TIMEOUT", 504, "Endpoint request timed out", "GatewayTimeoutException")
FUNCTION_THROTTLED = GatewayError(None, 429, "Too Many Requests", "TooManyRequestsException")
FUNCTION_FAILED = GatewayError(None, 502, "Internal server error", "InternalServerErrorException")


def signature_error(message: str) -> GatewayError:
    return GatewayError("INVALID_SIGNATURE", 403, message, "InvalidSignatureException")


_VARIABLE = re.compile(r"\$context\.([A-Za-z0-9_.]+)")


def render(
    responses: Mapping[str, tuple[str | None, str]],
    error: GatewayError,
    request_id: str,
) -> Answer:
    """The answer API Gateway gives for ``error`` with the API's gateway ``responses``."""
    fallback = "DEFAULT_5XX" if error.status >= 500 else "DEFAULT_4XX"
    response = responses.get(error.response_type or "") or responses.get(fallback)
    headers = {
        "Content-Type": ["application/json"],
        "x-amzn-RequestId": [request_id],
        "x-amzn-ErrorType": [error.error_type],
    }
    if response is None:
        return error.status, headers, json.dumps({"message": error.message}).encode()
    status, template = response
    variables = {
        "error.message": error.message,
        "error.messageString": json.dumps(error.message),
        "error.responseType": error.response_type or fallback,
        "requestId": request_id,
    }
    body = _VARIABLE.sub(lambda match: variables.get(match.group(1), ""), template)
    return int(status) if status else error.status, headers, body.encode()

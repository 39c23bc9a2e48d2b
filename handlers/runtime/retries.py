"""Retrying S3 reads of the model within the time the invocation has left.

A cold start that meets a throttled, slow or briefly unreachable S3 should try again, with
exponential backoff and full jitter, for as long as the invocation can still answer, and then
give up with a 503 the client can retry, rather than be killed by Lambda's timeout. The entry
points call :func:`start_invocation` with their Lambda context, and :func:`call` uses what is left
of it (less a margin to write the answer). Outside an invocation the budget is fixed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

ANSWER_MARGIN_S = 1.0  # kept back from the remaining time to build and send the 503
DEFAULT_BUDGET_S = 10.0  # outside an invocation (tests, tools)
BASE_DELAY_S = 0.1
MAX_DELAY_S = 2.0

_deadline: ContextVar[float | None] = ContextVar("onnxfn_deadline", default=None)

# Error codes S3 answers for conditions that pass: throttling, server errors, timeouts.
RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "Throttling",
        "ThrottlingException",
        "503",
        "500",
        "502",
        "504",
    }
)


def start_invocation(context: Any) -> None:
    """Remember when this invocation must have answered (from ``context``), for this thread."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    _deadline.set(time.monotonic() + remaining() / 1000 if callable(remaining) else None)


def time_left() -> float:
    """Seconds retries may still use."""
    deadline = _deadline.get()
    if deadline is None:
        return DEFAULT_BUDGET_S
    return deadline - time.monotonic() - ANSWER_MARGIN_S


def retryable(exc: BaseException) -> bool:
    """Network failures and S3's transient error codes; never a missing object or a denial."""
    import http.client

    from handlers.runtime.s3_read import S3ReadError

    if isinstance(exc, S3ReadError):
        return exc.code in RETRYABLE_CODES or str(exc.status) in RETRYABLE_CODES
    if isinstance(exc, (OSError, http.client.HTTPException)):  # refused, reset, timed out, cut short
        return True
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    transient = (
        EndpointConnectionError,
        ConnectionClosedError,
        ConnectTimeoutError,
        ReadTimeoutError,
        ResponseStreamingError,
        IncompleteReadError,
    )
    if isinstance(exc, transient):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return str(error.get("Code", "")) in RETRYABLE_CODES or status in RETRYABLE_CODES
    return False


def call(operation: Callable[[], T], on_retry: Callable[[int, BaseException, float], None] | None = None) -> T:
    """``operation()``, retried on transient failures while time is left (the last error re-raised)."""
    started = time.monotonic()
    budget = time_left()
    attempt = 0
    while True:
        attempt += 1
        try:
            return operation()
        except Exception as exc:
            if not retryable(exc):
                raise
            delay = random.uniform(0, min(MAX_DELAY_S, BASE_DELAY_S * 2 ** (attempt - 1)))
            if time.monotonic() - started + delay >= budget:
                raise
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            time.sleep(delay)

"""What every entry point does around its handler, written once.

Powertools' Lambda context in the logs (with a correlation id where the event carries one), the
tracer, EMF metrics with the ``ColdStart`` metric, the invocation clock the S3 retries budget
against, and, for event-source entry points, an empty batch answered without work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from handlers.runtime import retries
from handlers.runtime.observability import logger, metrics, tracer

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
NO_FAILURES: dict[str, Any] = {"batchItemFailures": []}


def entry_point(*, correlation_id_path: str | None = None, records: bool = False) -> Callable[[Handler], Handler]:
    """Decorate a ``lambda_handler``; ``records=True``: an event without ``Records`` has nothing to fail."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
            retries.start_invocation(context)
            if records and not event.get("Records"):
                return dict(NO_FAILURES)
            return handler(event, context)

        decorated = metrics.log_metrics(capture_cold_start_metric=True)(invoke)
        decorated = tracer.capture_lambda_handler(capture_response=False)(decorated)
        return logger.inject_lambda_context(correlation_id_path=correlation_id_path)(decorated)  # type: ignore[no-any-return]

    return wrap

"""Logger, metrics and tracer shared by every entry point (Powertools for AWS Lambda).

Created once per execution environment. Service name and metrics namespace come from the
standard Powertools variables, with onnxfn defaults so a bare local run still emits valid EMF.

The tracer is Powertools' X-Ray tracer only when tracing is on (in Lambda, and
``POWERTOOLS_TRACE_DISABLED`` not true). Powertools imports the X-Ray SDK even for a disabled
tracer, which costs 300-600 ms of every cold start here, so with tracing off a no-op stand-in
with the same decorators and subsegments is used instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from contract.environment import DEFAULT_NAMESPACE, DEFAULT_SERVICE, METRICS_NAMESPACE, SERVICE_NAME

SERVICE = os.environ.get(SERVICE_NAME) or DEFAULT_SERVICE
NAMESPACE = os.environ.get(METRICS_NAMESPACE) or DEFAULT_NAMESPACE

F = TypeVar("F", bound=Callable[..., Any])


class _Subsegment:
    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass


class _NoProvider:
    @contextmanager
    def in_subsegment(self, name: str) -> Iterator[_Subsegment]:
        yield _Subsegment()


class NoTracer:
    """What handlers use of Powertools' ``Tracer``, doing nothing (tracing off)."""

    provider = _NoProvider()

    def capture_lambda_handler(self, capture_response: bool = True) -> Callable[[F], F]:
        return lambda handler: handler

    def capture_method(self, capture_response: bool = True) -> Callable[[F], F]:
        return lambda method: method


def tracing_enabled(environ: Any = os.environ) -> bool:
    """Powertools' own rule: in Lambda, unless ``POWERTOOLS_TRACE_DISABLED`` says otherwise."""
    disabled = str(environ.get("POWERTOOLS_TRACE_DISABLED", "false")).lower() in ("1", "true", "yes", "on")
    return bool(environ.get("AWS_LAMBDA_FUNCTION_NAME")) and not disabled


def _tracer() -> NoTracer:
    """The tracer the entry points decorate with (typed as the subset of ``Tracer`` they use)."""
    if not tracing_enabled():
        return NoTracer()
    from aws_lambda_powertools import Tracer

    return cast(NoTracer, Tracer(service=SERVICE))


logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = _tracer()


def count_error(kind: str) -> None:
    """Emit one ``Errors`` metric with the error kind as a dimension, apart from the request's metrics."""
    with single_metric(
        name="Errors",
        unit=MetricUnit.Count,
        value=1,
        namespace=NAMESPACE,
        default_dimensions={"service": SERVICE, "kind": kind},
    ):
        pass


__all__ = ["MetricUnit", "NoTracer", "count_error", "logger", "metrics", "tracer", "tracing_enabled"]

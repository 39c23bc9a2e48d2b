"""Logger, metrics and tracer shared by every entry point (Powertools for AWS Lambda).

Created once per execution environment. Service name and metrics namespace come from the
standard Powertools variables, with onnxfn defaults so a bare local run still emits valid EMF.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from handlers.runtime.settings import DEFAULT_NAMESPACE, DEFAULT_SERVICE, METRICS_NAMESPACE, SERVICE_NAME

SERVICE = os.environ.get(SERVICE_NAME) or DEFAULT_SERVICE
NAMESPACE = os.environ.get(METRICS_NAMESPACE) or DEFAULT_NAMESPACE

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)


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


__all__ = ["MetricUnit", "count_error", "logger", "metrics", "tracer"]

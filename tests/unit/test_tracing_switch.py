"""Tracing off means no X-Ray SDK import at init; on (in Lambda) means Powertools' tracer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from handlers.runtime.observability import NoTracer, tracing_enabled
from tests.conftest import ROOT

PROBE = (
    "import json, sys, handlers.api, handlers.queue_worker, handlers.s3_batch\n"
    "from handlers.runtime.observability import tracer\n"
    "print(json.dumps({'xray': 'aws_xray_sdk' in sys.modules, 'botocore': 'botocore.client' in sys.modules,"
    " 'tracer': type(tracer).__name__}))"
)


def _probe(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**base, "MODEL_NAME": "digits", "AWS_DEFAULT_REGION": "us-east-1", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_rule_follows_powertools():
    assert not tracing_enabled({})  # not in Lambda
    assert tracing_enabled({"AWS_LAMBDA_FUNCTION_NAME": "f"})
    assert not tracing_enabled({"AWS_LAMBDA_FUNCTION_NAME": "f", "POWERTOOLS_TRACE_DISABLED": "true"})
    assert tracing_enabled({"AWS_LAMBDA_FUNCTION_NAME": "f", "POWERTOOLS_TRACE_DISABLED": "false"})


def test_tracing_off_imports_neither_xray_nor_botocore_at_init():
    found = _probe(AWS_LAMBDA_FUNCTION_NAME="f", POWERTOOLS_TRACE_DISABLED="true")
    assert found == {"xray": False, "botocore": False, "tracer": "NoTracer"}


def test_tracing_on_uses_powertools_tracer():
    found = _probe(AWS_LAMBDA_FUNCTION_NAME="f", POWERTOOLS_TRACE_DISABLED="false")
    assert found["xray"] and found["tracer"] == "Tracer"


def test_no_tracer_keeps_the_decorated_functions_and_subsegments_working():
    tracer = NoTracer()

    @tracer.capture_lambda_handler(capture_response=False)
    def handler(event, context):
        with tracer.provider.in_subsegment("## run") as segment:
            segment.put_annotation("batch", "1")
        return event

    assert handler(1, None) == 1

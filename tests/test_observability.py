"""Logs carry the request id, model, version, shapes and sizes — never payload data; metrics are EMF."""

from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stdout

from handlers.runtime.observability import logger

SECRET = "confidential sentence 4711"


def test_inference_log_has_shapes_and_ids_but_no_payload(serve):
    client = serve("minilm").client
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    level = logger.log_level
    logger.setLevel("INFO")
    try:
        with redirect_stdout(io.StringIO()) as metrics_out:
            reply = client.post(
                "/v2/models/minilm/infer",
                {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": [SECRET, SECRET]}]},
            )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert reply.status == 200
    records = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    inference = [r for r in records if r["message"] == "inference"]
    assert len(inference) == 1
    entry = inference[0]
    assert entry["inputs"] == {"text": [2]} and entry["request_bytes"] > 0
    assert entry["model"] == "minilm" and entry["model_version"] == "1"
    assert entry["correlation_id"] and entry["function_request_id"]
    assert SECRET not in buffer.getvalue()
    emf = [json.loads(line) for line in metrics_out.getvalue().splitlines() if line.startswith("{")]
    names = {m["Name"] for doc in emf for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"InferenceMs", "BatchSize", "RequestBytes", "ModelLoadMs"} <= names
    assert SECRET not in metrics_out.getvalue()


def test_errors_are_counted_by_kind(serve):
    client = serve("digits").client
    with redirect_stdout(io.StringIO()) as out:
        client.post("/v2/models/digits/infer", "{broken")
    errors = [json.loads(line) for line in out.getvalue().splitlines() if '"Errors"' in line]
    assert errors and errors[0]["kind"] == "InvalidInput" and errors[0]["Errors"] == [1.0]

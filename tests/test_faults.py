"""Faults injected into the real handlers (botocore event hooks on moto, patched onnxruntime, an
unusable /tmp, a redelivered message): each answered as designed, and the next request succeeds
without a restart; nothing is lost or scored twice."""

from __future__ import annotations

import errno
import json
import tempfile
import time

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from handlers.runtime.model_store import LoadedModel
from onnxfn.local.context import LocalContext
from onnxfn.local.events import api_gateway_event, response_body
from tests.conftest import BUCKET
from tests.events_support import Queue

DIGITS_BODY = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}


def _infer(served, timeout_s: float = 30.0):
    event = api_gateway_event(
        "POST", "/v2/models/digits/infer", json.dumps(DIGITS_BODY), {"Content-Type": "application/json"}
    )
    response = served.client.api.lambda_handler(event, LocalContext(timeout_s=timeout_s))
    return response["statusCode"], json.loads(response_body(response))


def _production_client(served):
    """The store's S3 client configured as in Lambda (one attempt per call: the store retries)."""
    from handlers.runtime.aws import model_s3_config

    served.store._s3 = boto3.client("s3", region_name="us-east-1", config=model_s3_config())
    return served.store._s3


def _unreachable_for(client, failures: int | None):
    """S3 GetObject fails with a connection error ``failures`` times (None: always)."""
    calls = {"n": 0}

    def hook(**_):
        calls["n"] += 1
        if failures is None or calls["n"] <= failures:
            raise EndpointConnectionError(endpoint_url="https://s3.us-east-1.amazonaws.com")

    client.meta.events.register("before-send.s3.GetObject", hook, unique_id="fault")
    return calls


def test_s3_unreachable_at_first_load_is_retried_and_served(serve):
    served = serve("digits", private=True)
    calls = _unreachable_for(_production_client(served), failures=3)
    status, body = _infer(served)
    assert status == 200, body
    assert calls["n"] == 5  # 3 failures retried by the store, then the manifest and the model


def test_s3_down_for_the_whole_invocation_answers_503_in_time_then_recovers(serve):
    served = serve("digits", private=True)
    client = _production_client(served)
    calls = _unreachable_for(client, failures=None)
    started = time.monotonic()
    status, body = _infer(served, timeout_s=3.0)
    elapsed = time.monotonic() - started
    assert status == 503 and "retries" in body["error"]
    assert 1.0 < elapsed < 3.0, "retried for the time left, and answered before the function's timeout"
    assert calls["n"] > 3
    client.meta.events.unregister("before-send.s3.GetObject", unique_id="fault")
    assert _infer(served)[0] == 200  # no restart needed


def test_slow_s3_still_loads(serve):
    served = serve("digits", private=True)

    def slow(**_):
        time.sleep(0.4)

    served.store._client().meta.events.register("before-send.s3.GetObject", slow)
    assert _infer(served)[0] == 200


def test_truncated_object_is_never_served_and_recovers(serve, s3):
    served = serve("digits", private=True)
    key = served.environment["MODEL_PREFIX"] + "model.onnx"
    original = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key, Body=original[: len(original) // 2])
    status, body = _infer(served)
    assert status == 503 and "expected" in body["error"] and "bytes" in body["error"]
    s3.put_object(Bucket=BUCKET, Key=key, Body=original)
    assert _infer(served)[0] == 200


def test_onnxruntime_raising_is_a_plain_500_and_the_next_request_works(serve, monkeypatch):
    served = serve("digits", private=True)
    assert _infer(served)[0] == 200
    original = LoadedModel.run

    def broken(self, inputs, outputs):
        raise RuntimeError("onnxruntime: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : simulated")

    monkeypatch.setattr(LoadedModel, "run", broken)
    status, body = _infer(served)
    assert status == 500 and set(body) == {"error"}
    assert "Traceback" not in body["error"] and "simulated" not in body["error"]
    monkeypatch.setattr(LoadedModel, "run", original)
    assert _infer(served)[0] == 200


def test_an_unusable_tmp_changes_nothing(serve, monkeypatch, tmp_path):
    """No handler writes to /tmp: with every tempfile call failing ENOSPC, load and inference work."""

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    served = serve("digits", private=True)  # uploaded first: moto itself buffers objects in tempfiles
    for name in ("mkstemp", "mkdtemp", "TemporaryFile", "NamedTemporaryFile"):
        monkeypatch.setattr(tempfile, name, full)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    assert _infer(served)[0] == 200


@pytest.fixture
def worker_env(serve, monkeypatch):
    served = serve("digits")
    for key, value in {**served.environment, "DATA_BUCKET": BUCKET}.items():
        monkeypatch.setenv(key, value)
    return served


def test_a_message_delivered_twice_is_scored_once(worker_env, s3, monkeypatch):
    from handlers import queue_worker

    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = Queue(sqs, "redelivery-digits")
    sqs.send_message(QueueUrl=queue.url, MessageBody=json.dumps(DIGITS_BODY))
    runs: list[int] = []
    original = LoadedModel.run

    def counting(self, inputs, outputs):
        runs.append(next(iter(inputs.values())).shape[0])
        return original(self, inputs, outputs)

    monkeypatch.setattr(LoadedModel, "run", counting)
    first = queue.event(1, visibility=0)  # visibility 0: as if the timeout passed before the delete
    assert queue_worker.lambda_handler(first, LocalContext()) == {"batchItemFailures": []}
    message_id = first["Records"][0]["messageId"]
    answer = s3.get_object(Bucket=BUCKET, Key=f"results/digits/{message_id}.json")
    again = queue.event(1)
    assert again["Records"][0]["messageId"] == message_id
    assert int(again["Records"][0]["attributes"]["ApproximateReceiveCount"]) == 2
    assert queue_worker.lambda_handler(again, LocalContext()) == {"batchItemFailures": []}
    assert runs == [1], "scored once"
    after = s3.get_object(Bucket=BUCKET, Key=f"results/digits/{message_id}.json")
    assert after["ETag"] == answer["ETag"] and after["LastModified"] == answer["LastModified"]

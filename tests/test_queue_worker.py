"""Queue worker: real moto SQS messages, read back as the event source mapping does, scored together.
In every test: records in = scored + failed, and each message id has exactly one result or one failure."""

from __future__ import annotations

import json

import boto3
import numpy as np
import pytest
from sklearn.datasets import load_digits

from handlers.runtime.model_store import LoadedModel
from onnxfn.local.context import LocalContext
from tests.conftest import BUCKET, artifact
from tests.events_support import Queue
from tests.reference import digits_direct, minilm_direct

PIXELS = load_digits().data[:20].astype(np.float32)


def _oip(rows, request_id=None):
    body = {"inputs": [{"name": "pixels", "shape": [len(rows), 64], "datatype": "FP32", "data": rows.tolist()}]}
    return {**body, "id": request_id} if request_id else body


@pytest.fixture
def worker(serve, s3, monkeypatch):
    def _open(model: str, **queue_options):
        served = serve(model)
        for key, value in {**served.environment, "DATA_BUCKET": BUCKET}.items():
            monkeypatch.setenv(key, value)
        sqs = boto3.client("sqs", region_name="us-east-1")
        import uuid

        queue = Queue(sqs, f"requests-{model}-{uuid.uuid4().hex[:8]}", **queue_options)
        from handlers import queue_worker

        def run(count: int = 10, visibility: int = 30):
            event = queue.event(count, visibility)
            response = queue_worker.lambda_handler(event, LocalContext())
            queue.settle(event, response)
            return event, response

        return served, queue, run

    return _open


def _result(s3, model, message_id, suffix=".json"):
    return json.loads(s3.get_object(Bucket=BUCKET, Key=f"results/{model}/{message_id}{suffix}")["Body"].read())


def _count_runs(monkeypatch):
    calls = []
    original = LoadedModel.run

    def counting(self, inputs, outputs):
        calls.append(next(iter(inputs.values())).shape[0])
        return original(self, inputs, outputs)

    monkeypatch.setattr(LoadedModel, "run", counting)
    return calls


def test_a_batch_of_ten_is_scored_in_one_run_and_a_bad_record_is_answered_once(worker, s3, monkeypatch):
    _, queue, run = worker("digits")
    bodies = [json.dumps(_oip(PIXELS[i : i + 1], f"r{i}")) for i in range(7)]
    bodies.append(json.dumps({"instances": PIXELS[7:9].tolist()}))  # V1, two rows
    bodies.append(
        json.dumps({"inputs": [{"name": "pixels", "shape": [1, 63], "datatype": "FP32", "data": [0.0] * 63}]})
    )  # bad shape
    bodies.append("not json")
    for body in bodies:
        queue.sqs.send_message(QueueUrl=queue.url, MessageBody=body)
    calls = _count_runs(monkeypatch)
    event, response = run(10)
    ids = [r["messageId"] for r in event["Records"]]
    by_body = {r["body"]: r["messageId"] for r in event["Records"]}
    assert len(ids) == 10
    # A wrong shape or a body that is not JSON can never succeed: answered once with the reason, not retried.
    assert response["batchItemFailures"] == []
    failed = {by_body[bodies[8]], by_body["not json"]}
    assert calls == [9]  # 7 + 2 compatible rows, one session.run
    labels, probabilities = digits_direct(artifact("digits"), PIXELS[:9])
    for i in range(7):
        answer = _result(s3, "digits", by_body[bodies[i]])
        assert answer["id"] == f"r{i}"
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert outputs["label"]["data"] == [labels[i]]
        np.testing.assert_allclose(outputs["probabilities"]["data"], probabilities[i], atol=1e-6)
    v1_answer = _result(s3, "digits", by_body[bodies[7]])
    assert [p["label"] for p in v1_answer["predictions"]] == labels[7:9].tolist()
    assert (
        "expected FP32 shape [-1, 64], got shape [1, 63]"
        in _result(s3, "digits", by_body[bodies[8]], ".error.json")["error"]
    )
    assert "not valid JSON" in _result(s3, "digits", by_body["not json"], ".error.json")["error"]
    for message_id in failed:
        assert _result(s3, "digits", message_id, ".error.json")["retried"] is False
    scored = len(ids) - len(failed)
    assert len(ids) == scored + len(failed) and scored == 8
    # every message was deleted: nothing comes back for a retry
    assert queue.receive(10) == []


def test_text_requests_batch_together(worker, s3, monkeypatch):
    _, queue, run = worker("minilm")
    texts = ["first request", "second, a little longer request", "third"]
    for text in texts:
        body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
        queue.sqs.send_message(QueueUrl=queue.url, MessageBody=json.dumps(body))
    calls = _count_runs(monkeypatch)
    event, response = run(3)
    assert response == {"batchItemFailures": []} and calls == [3]
    got = np.array([_result(s3, "minilm", r["messageId"])["outputs"][0]["data"][:] for r in event["Records"]])
    order = [json.loads(r["body"])["inputs"][0]["data"][0] for r in event["Records"]]
    expected = minilm_direct(artifact("minilm"), order)
    assert np.sum(got.reshape(3, 384) * expected, axis=1).min() > 0.99


def test_claim_check_and_reply_queue(worker, s3, monkeypatch):
    _, queue, run = worker("digits")
    big = json.dumps(_oip(PIXELS[:20], "claimed"))
    s3.put_object(Bucket=BUCKET, Key="requests/digits/big-request.json", Body=big.encode())
    replies = Queue(queue.sqs, f"{queue.url.rsplit('/', 1)[1]}-replies")
    elsewhere = Queue(queue.sqs, f"{queue.url.rsplit('/', 1)[1]}-elsewhere")
    monkeypatch.setenv("REPLY_QUEUES", replies.arn)  # the stack's reply_queue_arns setting
    queue.sqs.send_message(
        QueueUrl=queue.url,
        MessageBody=json.dumps({"claim_check": f"s3://{BUCKET}/requests/digits/big-request.json"}),
        MessageAttributes={"reply_to": {"DataType": "String", "StringValue": replies.url}},
    )
    queue.sqs.send_message(
        QueueUrl=queue.url, MessageBody=json.dumps({"claim_check": f"s3://{BUCKET}/models/digits/1/manifest.json"})
    )
    queue.sqs.send_message(
        QueueUrl=queue.url,
        MessageBody=json.dumps({"claim_check": f"s3://{BUCKET}/requests/digits/missing.json"}),
        MessageAttributes={"reply_to": {"DataType": "String", "StringValue": elsewhere.url}},
    )
    event, response = run(3)
    by_body = {json.loads(r["body"])["claim_check"]: r["messageId"] for r in event["Records"]}
    good = by_body[f"s3://{BUCKET}/requests/digits/big-request.json"]
    outside = by_body[f"s3://{BUCKET}/models/digits/1/manifest.json"]
    unlisted = by_body[f"s3://{BUCKET}/requests/digits/missing.json"]
    assert response["batchItemFailures"] == []  # neither can ever succeed: answered once, not retried
    assert "requests must live under" in _result(s3, "digits", outside, ".error.json")["error"]
    assert "not one of the model's configured reply queues" in _result(s3, "digits", unlisted, ".error.json")["error"]
    assert elsewhere.receive(1) == []
    answer = _result(s3, "digits", good)
    labels, _ = digits_direct(artifact("digits"), PIXELS[:20])
    assert answer["id"] == "claimed" and answer["outputs"][0]["data"] == labels.tolist()
    (reply,) = replies.receive(1)
    assert json.loads(reply["Body"]) == answer
    assert reply["MessageAttributes"]["correlation_id"]["StringValue"] == good


def test_a_poison_message_is_answered_once_and_never_reaches_the_dead_letter_queue(worker, s3):
    sqs = boto3.client("sqs", region_name="us-east-1")
    dlq = Queue(sqs, "poison-dlq")
    _, queue, run = worker("digits", dlq_arn=dlq.arn, max_receive=2)
    queue.sqs.send_message(QueueUrl=queue.url, MessageBody=json.dumps({"inputs": []}))
    queue.sqs.send_message(QueueUrl=queue.url, MessageBody=json.dumps(_oip(PIXELS[:1])))
    event, response = run(10, visibility=0)
    assert len(event["Records"]) == 2 and response["batchItemFailures"] == []
    poison = next(r["messageId"] for r in event["Records"] if json.loads(r["body"]) == {"inputs": []})
    error = _result(s3, "digits", poison, ".error.json")
    assert '"inputs" must be a non-empty list' in error["error"] and error["retried"] is False
    assert run(10, visibility=0)[0]["Records"] == []  # nothing to retry
    assert dlq.receive(1) == []


def test_a_failure_that_may_pass_is_retried_then_dead_lettered(worker, s3, monkeypatch):
    sqs = boto3.client("sqs", region_name="us-east-1")
    dlq = Queue(sqs, "flaky-dlq")
    _, queue, run = worker("digits", dlq_arn=dlq.arn, max_receive=2)

    def failing(self, inputs, outputs):
        raise RuntimeError("onnxruntime could not allocate")  # a fault of the moment, not of the request

    monkeypatch.setattr(LoadedModel, "run", failing)
    queue.sqs.send_message(QueueUrl=queue.url, MessageBody=json.dumps(_oip(PIXELS[:1])))
    receives = 0
    while True:
        event, response = run(10, visibility=0)  # failures come straight back, as after their timeout
        if not event["Records"]:
            break
        receives += 1
        assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [event["Records"][0]["messageId"]]
        assert receives <= 5
    assert 1 <= receives <= 2  # delivered again until SQS (moto) moves it after maxReceiveCount
    (dead,) = dlq.receive(1)
    error = _result(s3, "digits", dead["MessageId"], ".error.json")
    assert error == {
        "message_id": dead["MessageId"],
        "error": "could not be scored: RuntimeError",
        "model": "digits",
        "retried": True,
    }
    results = s3.list_objects_v2(Bucket=BUCKET, Prefix="results/digits/")["Contents"]
    assert not any(o["Key"] == f"results/digits/{dead['MessageId']}.json" for o in results)


def test_model_load_failure_fails_the_whole_batch_for_retry(worker, s3):
    served, queue, _ = worker("digits")
    served.store.settings = served.store.settings.__class__(**{**served.store.settings.__dict__, "bucket": ""})
    queue.sqs.send_message(QueueUrl=queue.url, MessageBody=json.dumps(_oip(PIXELS[:1])))
    from handlers import queue_worker
    from handlers.runtime.errors import ModelUnavailable

    event = queue.event(1)
    with pytest.raises(ModelUnavailable):
        queue_worker.lambda_handler(event, LocalContext())
    message_id = event["Records"][0]["messageId"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="results/digits/").get("Contents", [])]
    assert not any(message_id in key for key in keys)

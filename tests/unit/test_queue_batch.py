"""The queue's bookkeeping: outcomes reported through Powertools' partial-batch processor, and the
shared entry point answering an empty batch without work."""

from __future__ import annotations

from handlers.runtime.entry import entry_point
from handlers.runtime.errors import InvalidInput
from handlers.runtime.queue_batch import MicroBatchProcessor
from onnxfn.local.context import LocalContext


def _record(message_id: str) -> dict:
    return {"messageId": message_id, "receiptHandle": "r", "body": "{}", "attributes": {}, "eventSource": "aws:sqs"}


def test_each_record_is_reported_as_its_outcome_says():
    records = [_record("a"), _record("b"), _record("c")]
    response = MicroBatchProcessor().report(records, {"a": "results/a.json", "b": InvalidInput("bad"), "c": "ok"})
    assert response == {"batchItemFailures": [{"itemIdentifier": "b"}]}


def test_a_batch_that_failed_entirely_is_reported_record_by_record():
    processor = MicroBatchProcessor()
    # Powertools raises by default; every record reported as failed retries them all the same way,
    # without counting the invocation as a function error.
    assert processor.report([_record("a")], {"a": RuntimeError("S3 unreachable")}) == {
        "batchItemFailures": [{"itemIdentifier": "a"}]
    }
    # the processor is reusable by the next invocation of the environment
    assert processor.report([_record("b")], {"b": "ok"}) == {"batchItemFailures": []}


def test_the_entry_point_answers_an_empty_batch_without_calling_the_handler():
    calls = []

    @entry_point(records=True)
    def handler(event, context):
        calls.append(event)
        return {"batchItemFailures": [{"itemIdentifier": "x"}]}

    assert handler({}, LocalContext()) == {"batchItemFailures": []}
    assert handler({"Records": []}, LocalContext()) == {"batchItemFailures": []}
    assert calls == []
    assert handler({"Records": [_record("x")]}, LocalContext()) == {"batchItemFailures": [{"itemIdentifier": "x"}]}

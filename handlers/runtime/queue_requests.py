"""Scoring a batch of SQS messages, each an inference request, in as few ``session.run`` calls as fit.

A message body is an OIP infer request or a V1 request, or a claim check
``{"claim_check": "s3://<bucket>/requests/<model>/<key>"}`` pointing at one (SQS caps a message at
256 KB). The answer goes to ``results/<model>/<message id>.json`` and, when the message carries a
``reply_to`` attribute (a queue URL), to that queue. A message that can never succeed (not JSON, a
wrong shape: a 4xx for an API client) is answered once with ``results/<model>/<message id>.error.json``
and its reason, and not retried. A message that failed for a reason that may pass (S3 unreachable,
onnxruntime failing) leaves the same record with ``"retried": true`` and fails alone (partial batch
response): SQS delivers it again, and after ``maxReceiveCount`` receives moves it to the dead-letter
queue.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

from contract.manifest import Manifest
from contract.quoting import quote
from handlers.runtime import jsonio
from handlers.runtime import rows as rowlib
from handlers.runtime.errors import InvalidInput, OnnxfnError
from handlers.runtime.model_store import LoadedModel
from handlers.runtime.observability import MetricUnit, logger, metrics
from handlers.runtime.settings import DataSettings

REPLY_ATTRIBUTE = "reply_to"
CLAIM_CHECK = "claim_check"
MAX_CLAIM_BYTES = 6 * 1024 * 1024
DELIVERY_THREADS = 8


_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """Delivery threads, started once per execution environment and kept for warm invocations."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=DELIVERY_THREADS, thread_name_prefix="deliver")
    return _executor


class RecordFailed(Exception):
    """A record that could not be scored; its message is the reason."""


def _claimed(s3: Any, data: DataSettings, pointer: Any) -> bytes:
    if not isinstance(pointer, str) or not pointer.startswith("s3://"):
        raise InvalidInput(f'{CLAIM_CHECK}: expected "s3://<bucket>/<key>", got {quote(pointer)}')
    parsed = urlparse(pointer)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if bucket != data.bucket or not key.startswith(data.requests_prefix):
        raise InvalidInput(f"{CLAIM_CHECK}: requests must live under s3://{data.bucket}/{data.requests_prefix}")
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "AccessDenied", "403"):
            raise InvalidInput(f"{CLAIM_CHECK}: no readable object at {pointer}") from exc
        raise
    if obj.get("ContentLength", 0) > MAX_CLAIM_BYTES:
        raise InvalidInput(f"{CLAIM_CHECK}: the request is over {MAX_CLAIM_BYTES} bytes")
    body: bytes = obj["Body"].read()
    return body


def parse_record(s3: Any, data: DataSettings, manifest: Manifest, record: Mapping[str, Any]) -> rowlib.Row:
    """A checked row from one SQS record (following a claim check)."""
    message_id = str(record["messageId"])
    reply_queue(record, data)  # an unknown reply queue fails the record before any work
    raw = str(record.get("body", "")).encode("utf-8")
    try:
        document = jsonio.loads(raw)
    except jsonio.JSONDecodeError as exc:
        raise InvalidInput(f"message body is not valid JSON: {exc}") from exc
    if isinstance(document, Mapping) and set(document) == {CLAIM_CHECK}:
        raw = _claimed(s3, data, document[CLAIM_CHECK])
        try:
            document = jsonio.loads(raw)
        except (jsonio.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"claimed request is not valid JSON: {exc}") from exc
    if not isinstance(document, Mapping) or not ({"inputs", "instances"} & set(document)):
        raise InvalidInput('expected an OIP infer request {"inputs": [...]} or a V1 request {"instances": [...]}')
    return rowlib.row_from_document(message_id, document, manifest, raw)


def score_records(
    s3: Any, data: DataSettings, loaded: LoadedModel, records: list[Mapping[str, Any]]
) -> dict[str, rowlib.Outcome]:
    """Every record's outcome by message id: parsed one by one, scored together."""
    outcomes: dict[str, rowlib.Outcome] = {}
    valid: list[rowlib.Row] = []
    for record in records:
        message_id = str(record["messageId"])
        try:
            valid.append(parse_record(s3, data, loaded.manifest, record))
        except OnnxfnError as exc:
            outcomes[message_id] = rowlib.failed(rowlib.Row(message_id), exc)
        except Exception as exc:  # e.g. S3 unavailable for a claim check: this record alone is retried
            logger.warning("record could not be read", extra={"message_id": message_id, "error": type(exc).__name__})
            outcomes[message_id] = rowlib.Outcome(
                rowlib.Row(message_id), error=f"could not be read ({type(exc).__name__})", retry=True
            )
    started = time.perf_counter()
    for outcome in rowlib.score(loaded, valid):
        outcomes[str(outcome.row.ref)] = outcome
    seconds = max(time.perf_counter() - started, 1e-9)
    scored = sum(o.results is not None for o in outcomes.values())
    metrics.add_metric(name="RecordsIn", unit=MetricUnit.Count, value=len(records))
    metrics.add_metric(name="RecordsScored", unit=MetricUnit.Count, value=scored)
    metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=len(records) - scored)
    if valid:
        rows = sum(row.batch for row in valid)
        metrics.add_metric(name="RowsPerSecond", unit=MetricUnit.CountPerSecond, value=rows / seconds)
    return outcomes


def deliver(
    s3: Any, sqs: Any, data: DataSettings, manifest: Manifest, record: Mapping[str, Any], outcome: rowlib.Outcome
) -> str:
    """Write the answer, or the failure and its reason; raise ``RecordFailed`` for a failure that may pass
    (so the queue delivers the message again), and return the error record's key for a final one."""
    message_id = str(record["messageId"])
    if outcome.error is not None:
        failure = {"message_id": message_id, "error": outcome.error, "model": manifest.name, "retried": outcome.retry}
        key = f"{data.results_prefix}{message_id}.error.json"
        s3.put_object(Bucket=data.bucket, Key=key, Body=json.dumps(failure).encode(), ContentType="application/json")
        if outcome.retry:
            logger.warning("record failed, to be retried", extra={"message_id": message_id, "reason": outcome.error})
            raise RecordFailed(outcome.error)
        metrics.add_metric(name="RecordsRejected", unit=MetricUnit.Count, value=1)
        logger.info("record rejected", extra={"message_id": message_id, "reason": outcome.error})
        return key
    key = f"{data.results_prefix}{message_id}.json"
    body = rowlib.answer_json(manifest, outcome)
    s3.put_object(Bucket=data.bucket, Key=key, Body=body, ContentType="application/json")
    reply_to = reply_queue(record, data)
    if reply_to:
        try:
            sqs.send_message(
                QueueUrl=reply_to,
                MessageBody=body.decode("utf-8"),
                MessageAttributes={"correlation_id": {"DataType": "String", "StringValue": message_id}},
            )
        except Exception as exc:  # the answer is already durable in S3: don't score the record again
            metrics.add_metric(name="ReplyFailures", unit=MetricUnit.Count, value=1)
            logger.warning("reply not sent", extra={"message_id": message_id, "error": type(exc).__name__})
    return key


def _queue_identity(reference: str) -> tuple[str, str] | None:
    """(account, name) of a queue given by URL or ARN."""
    if reference.startswith("arn:"):
        parts = reference.split(":")
        return (parts[4], parts[5]) if len(parts) == 6 else None
    path = urlparse(reference).path.strip("/").split("/")
    return (path[0], path[1]) if len(path) == 2 else None


def reply_queue(record: Mapping[str, Any], data: DataSettings) -> str | None:
    """The record's ``reply_to`` queue URL, if it names one this function may send to."""
    reply_to = ((record.get("messageAttributes") or {}).get(REPLY_ATTRIBUTE) or {}).get("stringValue")
    if not reply_to:
        return None
    identity = _queue_identity(str(reply_to))
    allowed = {_queue_identity(arn) for arn in data.reply_queues}
    if identity is None or identity not in allowed:
        raise InvalidInput(f"{REPLY_ATTRIBUTE}: this queue is not one of the model's configured reply queues")
    return str(reply_to)


def deliver_all(
    s3: Any,
    sqs: Any,
    data: DataSettings,
    manifest: Manifest,
    records: list[Mapping[str, Any]],
    outcomes: Mapping[str, rowlib.Outcome],
) -> dict[str, str | BaseException]:
    """Deliver every record's answer concurrently (S3 and SQS calls are I/O); failures kept per record."""

    def one(record: Mapping[str, Any]) -> str | BaseException:
        try:
            return deliver(s3, sqs, data, manifest, record, outcomes[str(record["messageId"])])
        except Exception as exc:  # kept and re-raised for that record alone
            return exc

    results = list(_pool().map(one, records)) if len(records) > 1 else [one(r) for r in records]
    return {str(record["messageId"]): result for record, result in zip(records, results, strict=True)}

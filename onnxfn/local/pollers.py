"""SQS event source mappings, run locally: poll, batch, invoke, delete what succeeded.

Each mapping of the assembly gets a poller that long-polls its queue in moto, gathers up to
``BatchSize`` messages within ``MaximumBatchingWindowInSeconds``, invokes the function with the
event Lambda builds, and then, as Lambda does: deletes every message when the invocation
succeeded; deletes all but the ``batchItemFailures`` when the function reports them
(``ReportBatchItemFailures``); deletes none when the invocation failed, so the messages come back
after their visibility timeout and moto moves them to the dead-letter queue after
``maxReceiveCount`` receives. ``retry_after_s`` shortens that wait locally (the visibility of the
failed messages is set to it), so redrive can be watched without waiting half an hour.
S3 notifications reach the functions this way too: moto sends them to the inbox queues. A batch
of S3 test events alone (S3 sends one to each queue when the bucket's notifications are set) is
deleted without starting the function, whose handler returns at once for it: so an app of many
models starts without a cold start per model. (Only on the queues a bucket notifies: on any other,
such a message is an ordinary one.)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from onnxfn.local.assembly import LOCAL_REGION, EventSourceSpec
from onnxfn.local.events import sqs_event
from onnxfn.local.functions import FunctionPool, Invocation

POLL_WAIT_S = 5  # long-poll length (SQS allows up to 20 s); a message ends the wait at once

logger = logging.getLogger("onnxfn.local")


@dataclass
class BatchOutcome:
    source: EventSourceSpec
    received: int
    deleted: int
    failed_ids: list[str]
    invocation: Invocation
    note: str = ""  # said of a batch delivered without an invocation


def s3_test_event(message: dict[str, Any]) -> bool:
    """The message S3 sends a queue when a bucket's notifications are set (``s3:TestEvent``)."""
    try:
        body = json.loads(message.get("Body", ""))
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("Event") == "s3:TestEvent" and "Records" not in body


class QueuePoller:
    def __init__(
        self,
        source: EventSourceSpec,
        queue_url: str,
        queue_arn: str,
        pool: FunctionPool,
        sqs: Any,
        *,
        retry_after_s: float | None = None,
        on_batch: Callable[[BatchOutcome], None] | None = None,
        s3_notified: bool = False,
    ) -> None:
        """``s3_notified``: a bucket notifies this queue, so S3's test events arrive here."""
        self.source = source
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.pool = pool
        self.sqs = sqs
        self.retry_after_s = retry_after_s
        self.on_batch = on_batch
        self.s3_notified = s3_notified
        concurrency = min(pool.concurrency, source.max_concurrency or pool.concurrency)
        self._slots = threading.BoundedSemaphore(concurrency)
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"esm-{pool.runtime.name}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poll-{pool.runtime.name}", daemon=True)
        self.batches = 0

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=0.5)  # a poll still waiting ends with the embedded AWS
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _receive(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.source.batching_window_s
        while not self._stop.is_set() and len(messages) < self.source.batch_size:
            wait = POLL_WAIT_S if not messages else max(0, min(POLL_WAIT_S, int(deadline - time.monotonic())))
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.source.batch_size - len(messages)),
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            batch = response.get("Messages", [])
            messages.extend(batch)
            if messages and (not batch or time.monotonic() >= deadline):
                break
        return messages

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            try:
                messages = self._receive()
            except Exception:  # moto stopping, or a transient error: try again shortly
                logger.debug("receive from %s failed", self.queue_url, exc_info=True)
                self._slots.release()
                self._stop.wait(0.5)
                continue
            if not messages:
                self._slots.release()
                continue
            self._executor.submit(self._deliver, messages)

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        try:
            note = ""
            if self.s3_notified and all(s3_test_event(m) for m in messages):
                invocation = Invocation(self.pool.runtime.name, "-", payload={"batchItemFailures": []})
                note = "S3 test event: deleted without starting the function (its handler ignores it)"
            else:
                event = sqs_event(messages, self.queue_arn, LOCAL_REGION)
                invocation = self.pool.invoke(event)
            failed = self._failed_ids(messages, invocation)
            done = [m for m in messages if m["MessageId"] not in failed]
            for start in range(0, len(done), 10):
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
                ]
                self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            if failed and self.retry_after_s is not None:
                for message in messages:
                    if message["MessageId"] in failed:
                        self.sqs.change_message_visibility(
                            QueueUrl=self.queue_url,
                            ReceiptHandle=message["ReceiptHandle"],
                            VisibilityTimeout=int(self.retry_after_s),
                        )
            self.batches += 1
            if self.on_batch is not None:
                self.on_batch(BatchOutcome(self.source, len(messages), len(done), sorted(failed), invocation, note))
        except Exception:  # the messages stay in the queue and come back after their visibility timeout
            logger.exception("delivering %d message(s) from %s failed", len(messages), self.queue_url)
        finally:
            self._slots.release()

    def _failed_ids(self, messages: list[dict[str, Any]], invocation: Invocation) -> set[str]:
        every = {m["MessageId"] for m in messages}
        if not invocation.ok:
            return every
        if not self.source.report_batch_item_failures or not isinstance(invocation.payload, dict):
            return set()
        failures = invocation.payload.get("batchItemFailures")
        if not failures:
            return set()
        ids = {str(item.get("itemIdentifier")) for item in failures if isinstance(item, dict)}
        # Lambda treats an unknown or empty identifier as a failure of the whole batch.
        return every if not ids <= every or len(ids) != len(failures) else ids

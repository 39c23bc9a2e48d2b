"""A queue batch's bookkeeping: redeliveries already answered, and each record's outcome reported
through Powertools' partial-batch processor.

The queue worker scores a whole batch in one pass (``queue_requests``), so it knows every record's
outcome before Powertools sees a record. :class:`MicroBatchProcessor` is Powertools' SQS processor
with that one difference: instead of calling a handler per record, it reports the outcome already
computed, as a success or as a failure (SQS then retries that record alone and, after
``maxReceiveCount``, dead-letters it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

from handlers.runtime.observability import logger
from handlers.runtime.settings import DataSettings


def already_answered(s3: Any, data: DataSettings, records: list[dict[str, Any]]) -> set[str]:
    """Message ids, among redeliveries, whose answer is already in S3: not scored a second time.

    A message comes back when its visibility timeout passes before the batch was deleted (a slow
    or crashed invocation). Only redeliveries (ApproximateReceiveCount > 1) are looked up, so a
    first delivery costs no extra request.
    """
    found: set[str] = set()
    for record in records:
        if int(record.get("attributes", {}).get("ApproximateReceiveCount", "1") or 1) <= 1:
            continue
        try:
            s3.head_object(Bucket=data.bucket, Key=f"{data.results_prefix}{record['messageId']}.json")
        except Exception:  # not there (404) or not readable: score it
            continue
        logger.info("already answered; not scored again", extra={"message_id": record["messageId"]})
        found.add(str(record["messageId"]))
    return found


class MicroBatchProcessor(BatchProcessor):
    """Powertools' SQS partial-batch processor over outcomes computed for the whole batch at once."""

    def __init__(self) -> None:
        # A batch whose every record failed is reported like any other, record by record: SQS retries
        # them all either way, and the invocation is not counted as a function error.
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self._outcomes: Mapping[str, Any] = {}

    def report(self, records: list[dict[str, Any]], outcomes: Mapping[str, Any]) -> dict[str, Any]:
        """The partial batch response for ``records``; an outcome that is an exception fails its record."""
        self._outcomes = outcomes
        try:
            with self(records=records, handler=self._outcome):
                self.process()
        finally:
            self._outcomes = {}
        return dict(self.response())

    def _outcome(self, record: Any) -> Any:
        return self._outcomes[record.message_id]

    def _process_record(self, record: dict[str, Any]) -> Any:
        outcome = self._outcomes[record["messageId"]]
        if isinstance(outcome, BaseException):
            data = self._to_batch_type(record=record, event_type=self.event_type, model=self.model)
            return self.failure_handler(record=data, exception=(type(outcome), outcome, outcome.__traceback__))
        return self.success_handler(record=record, result=outcome)

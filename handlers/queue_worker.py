"""Queue entry point: SQS messages carrying inference requests, scored in micro-batches."""

from __future__ import annotations

from typing import Any, cast

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.runtime.aws import client
from handlers.runtime.model_store import get_store
from handlers.runtime.observability import logger, metrics, tracer
from handlers.runtime.queue_requests import deliver_all, score_records
from handlers.runtime.settings import load_data_settings

processor = BatchProcessor(event_type=EventType.SQS)


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not event.get("Records"):
        return {"batchItemFailures": []}
    data = load_data_settings()
    loaded = get_store().get_model()  # a load failure fails the whole batch: every record is retried
    records = event.get("Records", [])
    outcomes = score_records(client("s3"), data, loaded, records)
    delivered = deliver_all(client("s3"), client("sqs"), data, loaded.manifest, records, outcomes)

    def record_handler(record: SQSRecord) -> str:
        result = delivered[record.message_id]
        if isinstance(result, BaseException):
            raise result  # this record alone fails; SQS retries it, then dead-letters it
        return result

    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return cast(dict[str, Any], response)

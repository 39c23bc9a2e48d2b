"""Queue entry point: SQS messages carrying inference requests, scored in micro-batches."""

from __future__ import annotations

from typing import Any, cast

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.runtime import lifecycle, retries
from handlers.runtime.aws import client
from handlers.runtime.model_store import get_store
from handlers.runtime.observability import logger, metrics, tracer
from handlers.runtime.queue_requests import deliver_all, score_records
from handlers.runtime.settings import DataSettings, load_data_settings

processor = BatchProcessor(event_type=EventType.SQS)
lifecycle.init_environment()


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


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    retries.start_invocation(context)
    if not event.get("Records"):
        return {"batchItemFailures": []}
    data = load_data_settings()
    loaded = get_store().get_model()  # a load failure fails the whole batch: every record is retried
    records = event.get("Records", [])
    answered = already_answered(client("s3"), data, records)
    fresh = [record for record in records if record["messageId"] not in answered]
    outcomes = score_records(client("s3"), data, loaded, fresh)
    delivered: dict[str, Any] = deliver_all(client("s3"), client("sqs"), data, loaded.manifest, fresh, outcomes)
    delivered.update({message_id: "already answered" for message_id in answered})

    def record_handler(record: SQSRecord) -> str:
        result = delivered[record.message_id]
        if isinstance(result, BaseException):
            raise result  # this record alone fails; SQS retries it, then dead-letters it
        return str(result)

    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return cast(dict[str, Any], response)

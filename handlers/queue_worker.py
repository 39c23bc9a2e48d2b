"""Queue entry point: SQS messages carrying inference requests, scored in micro-batches."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.runtime import lifecycle
from handlers.runtime.aws import client
from handlers.runtime.entry import entry_point
from handlers.runtime.model_store import get_store
from handlers.runtime.queue_batch import MicroBatchProcessor, already_answered
from handlers.runtime.queue_requests import deliver_all, score_records
from handlers.runtime.settings import load_data_settings

processor = MicroBatchProcessor()
lifecycle.init_environment()


@entry_point(records=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    data = load_data_settings()
    loaded = get_store().get_model()  # a load failure fails the whole batch: every record is retried
    records = event["Records"]
    answered = already_answered(client("s3"), data, records)
    fresh = [record for record in records if record["messageId"] not in answered]
    outcomes = score_records(client("s3"), data, loaded, fresh)
    delivered: dict[str, Any] = deliver_all(client("s3"), client("sqs"), data, loaded.manifest, fresh, outcomes)
    delivered.update({message_id: "already answered" for message_id in answered})
    return processor.report(records, delivered)

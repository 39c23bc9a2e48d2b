"""S3 batch entry point: files dropped under ``inbox/<model>/`` (S3 notifications delivered by SQS), and
the two steps of the model's big-batch state machine (``contract/big_batch.py``): a batch of a big
file's items, and the assembly of its parts."""

from __future__ import annotations

import json
from typing import Any, cast
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from contract import big_batch
from handlers.runtime import lifecycle
from handlers.runtime.aws import s3_client
from handlers.runtime.batch import FileSummary, process_object
from handlers.runtime.batch.handoff import maybe_hand_off
from handlers.runtime.batch.parts import assemble, score_part
from handlers.runtime.entry import NO_FAILURES, entry_point
from handlers.runtime.model_store import get_store
from handlers.runtime.observability import logger
from handlers.runtime.settings import load_data_settings

processor = BatchProcessor(event_type=EventType.SQS)
lifecycle.init_environment()


def handle_notification(record: SQSRecord) -> list[FileSummary]:
    """Every object named in one S3 event notification; an S3 test event is acknowledged and ignored."""
    event = json.loads(record.body)
    if event.get("Event") == "s3:TestEvent":
        return []
    data = load_data_settings()
    summaries = []
    for entry in event.get("Records", []):
        s3_info = entry["s3"]
        bucket = s3_info["bucket"]["name"]
        key = unquote_plus(s3_info["object"]["key"])
        if not key.startswith(data.inbox_prefix) or key.endswith("/"):
            logger.warning("object outside this model's inbox; ignored", extra={"key": key})
            continue
        version_id, etag = s3_info["object"].get("versionId"), s3_info["object"].get("eTag")
        size = s3_info["object"].get("size")
        handed_off = maybe_hand_off(s3_client(), data, get_store(), bucket, key, version_id, etag, size)
        if handed_off is not None:
            summaries.append(handed_off)
            continue
        summaries.append(process_object(s3_client(), data, get_store(), bucket, key, version_id, etag))
    return summaries


@entry_point()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if big_batch.ITEMS in event:
        return score_part(event, s3_client(), load_data_settings(), get_store())
    if big_batch.ASSEMBLE in event:
        return assemble(event, s3_client(), load_data_settings(), get_store())
    if not event.get("Records"):
        return dict(NO_FAILURES)
    response = process_partial_response(
        event=event, record_handler=handle_notification, processor=processor, context=context
    )
    return cast(dict[str, Any], response)

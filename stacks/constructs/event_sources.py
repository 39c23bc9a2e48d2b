"""BatchInbox and RequestQueue: the SQS queues (each with a dead-letter queue) that feed a function."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct


def _queues(scope: Construct, timeout_s: int, max_receive_count: int) -> tuple[sqs.Queue, sqs.Queue]:
    dlq = sqs.Queue(
        scope,
        "DeadLetters",
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=Duration.days(14),
    )
    queue = sqs.Queue(
        scope,
        "Queue",
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        # AWS: at least six times the function timeout, so retries do not overlap a running batch.
        visibility_timeout=Duration.seconds(6 * timeout_s),
        retention_period=Duration.days(4),
        dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=max_receive_count),
    )
    return queue, dlq


@dataclass(frozen=True, kw_only=True)
class BatchInboxProps:
    bucket: s3.IBucket
    prefix: str  # "inbox/<model>/"
    function: lambda_.IFunction
    timeout_s: int
    max_concurrency: int = 5  # batch environments at most: a burst of files cannot take the account's pool
    max_receive_count: int = 3


class BatchInbox(Construct):
    """``ObjectCreated`` under ``prefix`` -> SQS (with DLQ) -> the batch function, one file per invocation.

    Attributes: ``queue``, ``dead_letters``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: BatchInboxProps) -> None:
        super().__init__(scope, construct_id)
        self.queue, self.dead_letters = _queues(self, props.timeout_s, props.max_receive_count)
        props.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.SqsDestination(self.queue),
            s3.NotificationKeyFilter(prefix=props.prefix),
        )
        props.function.add_event_source(
            sources.SqsEventSource(
                self.queue, batch_size=1, report_batch_item_failures=True, max_concurrency=props.max_concurrency
            )
        )


@dataclass(frozen=True, kw_only=True)
class RequestQueueProps:
    function: lambda_.IFunction
    timeout_s: int
    batch_size: int
    max_concurrency: int
    max_receive_count: int = 3


class RequestQueue(Construct):
    """Inference requests as SQS messages -> the worker function in micro-batches, partial failures reported.

    Attributes: ``queue``, ``dead_letters``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: RequestQueueProps) -> None:
        super().__init__(scope, construct_id)
        self.queue, self.dead_letters = _queues(self, props.timeout_s, props.max_receive_count)
        props.function.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=props.batch_size,
                max_batching_window=Duration.seconds(1),
                report_batch_item_failures=True,
                max_concurrency=props.max_concurrency,
            )
        )

"""Moto plumbing for the event-driven handlers: S3 notifications into SQS, read back as Lambda would."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3

from onnxfn.local.events import sqs_event


class Queue:
    def __init__(self, sqs: Any, name: str, dlq_arn: str | None = None, max_receive: int = 3) -> None:
        attributes = {"VisibilityTimeout": "0"}
        if dlq_arn:
            attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive})
        self.sqs = sqs
        self.url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        self.arn = sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def receive(self, count: int = 10, visibility: int = 30) -> list[dict[str, Any]]:
        """Up to ``count`` distinct messages (with a visibility timeout of 0 a message may come back)."""
        messages: list[dict[str, Any]] = []
        seen: set[str] = set()
        while len(messages) < count:
            batch = self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=min(10, count - len(messages)),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
                VisibilityTimeout=visibility,
            ).get("Messages", [])
            fresh = [m for m in batch if m["MessageId"] not in seen]
            if not fresh:
                break
            seen.update(m["MessageId"] for m in fresh)
            messages.extend(fresh)
        return messages

    def event(self, count: int = 10, visibility: int = 30) -> dict[str, Any]:
        return sqs_event(self.receive(count, visibility), self.arn)

    def settle(self, event: dict[str, Any], response: dict[str, Any]) -> None:
        """What the event source mapping does: delete the records that did not fail."""
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        for record in event["Records"]:
            if record["messageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=record["receiptHandle"])


def inbox_queue(s3: Any, bucket: str, model: str) -> Queue:
    """An SQS queue that moto's S3 notifies for every object created under ``inbox/<model>/``."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = Queue(sqs, f"inbox-{model}-{uuid.uuid4().hex[:8]}")
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue.arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": f"inbox/{model}/"}]}},
                }
            ]
        },
    )
    for message in queue.receive(1):  # moto's s3:TestEvent
        queue.sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])
    return queue

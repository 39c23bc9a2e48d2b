"""A Lambda handler that misbehaves on request, to prove the local runtime contains it."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any


def _reply(status: int, document: Any) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(document)}


def _sqs(event: dict[str, Any]) -> dict[str, Any]:
    bodies = [record["body"] for record in event["Records"]]
    print(json.dumps({"level": "INFO", "message": "batch", "bodies": bodies}))
    if "crash" in bodies:
        os._exit(3)
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "fail"]}


def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    if "Records" in event:
        return _sqs(event)
    path = event["path"]
    query = event.get("queryStringParameters") or {}
    if path == "/crash":
        os._exit(1)
    if path == "/raise":
        raise RuntimeError("the handler raised")
    if path in ("/sleep", "/slow"):
        time.sleep(float(query.get("s", "1")))
    if path == "/runtime":  # what the function runs on, as seen from inside
        return _reply(
            200,
            {
                "pid": os.getpid(),
                "executable": sys.executable,
                "version": list(sys.version_info[:3]),
                "path": sys.path,
                "dont_write_bytecode": sys.dont_write_bytecode,
                "modules": sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())}),
                "cgroup": open("/proc/self/cgroup").read(),
            },
        )
    if path == "/malformed":
        return {"body": "a proxy response without statusCode"}
    if path == "/echo":
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/octet-stream"},
            "body": event["body"],
            "isBase64Encoded": event["isBase64Encoded"],
        }
    scratch = os.path.join(tempfile.gettempdir(), "scratch.txt")
    seen_before = os.path.exists(scratch)
    with open(scratch, "w") as handle:
        handle.write(context.aws_request_id)
    return _reply(
        200,
        {
            "pid": os.getpid(),
            "tmp": tempfile.gettempdir(),
            "tmp_reused": seen_before,
            "memory": os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"],
            "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"],
            "remaining_ms": context.get_remaining_time_in_millis(),
            "resource": event["resource"],
            "path_parameters": event["pathParameters"],
            "stage": event["requestContext"]["stage"],
            "request_id": context.aws_request_id,
            "bucket": os.environ["BUCKET"],
            "queue_arn": os.environ["QUEUE_ARN"],
            "queue_url": os.environ["QUEUE_URL"],
        },
    )

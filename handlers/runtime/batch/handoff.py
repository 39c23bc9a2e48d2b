"""The hand-off of a big batch file to the model's Distributed Map state machine.

A file whose records (estimated from its first MiB) or bytes reach the threshold would not finish in
one invocation: it is started as an execution named after its key and version, so each source
version runs once however often S3 notifies. Below the threshold nothing changes: the small path
scores the file in this invocation.
"""

from __future__ import annotations

import json
from typing import Any

from contract import big_batch
from handlers.runtime.aws import client
from handlers.runtime.batch.files import SOURCE_VERSION, file_format, new_summary
from handlers.runtime.batch.sink import FileSummary
from handlers.runtime.observability import MetricUnit, logger, metrics
from handlers.runtime.s3_io import head
from handlers.runtime.settings import DataSettings

SAMPLE_BYTES = 1024 * 1024


def estimate_records(s3: Any, bucket: str, key: str, version_id: str | None, size: int) -> int:
    """Records in the file: counted when it fits in the sample, else its size over the sample's bytes
    per line."""
    if size <= 0:
        return 0
    params = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
    sample = s3.get_object(Range=f"bytes=0-{SAMPLE_BYTES - 1}", **params)["Body"].read()
    if len(sample) >= size:
        return int(sample.count(b"\n") + (0 if sample.endswith(b"\n") else 1))
    whole_lines = max(sample.count(b"\n"), 1)
    return int(size * whole_lines / max(sample.rfind(b"\n") + 1, 1))


def maybe_hand_off(
    s3: Any, data: DataSettings, bucket: str, key: str, version_id: str | None, etag: str | None, size: int | None
) -> FileSummary | None:
    """Start the state machine for a big file and return what was done; None: score it here."""
    settings = data.big_batch
    fmt = file_format(key)
    if settings is None or fmt not in settings.formats:
        return None
    if size is None:
        size = int((head(s3, bucket, key) or {}).get("ContentLength", 0))
    big_by_bytes = settings.bytes is not None and size >= settings.bytes
    records = 0 if big_by_bytes else estimate_records(s3, bucket, key, version_id, size)
    if not big_by_bytes and records < settings.rows:
        return None
    source_version = version_id or (etag or "").strip('"') or "unversioned"
    summary = new_summary(data, bucket, key, source_version, fmt)
    summary.execution = big_batch.execution_name(key, source_version)
    existing = head(s3, data.bucket, summary.output_key or "")
    if existing and existing.get("Metadata", {}).get(SOURCE_VERSION) == source_version:
        logger.info("duplicate notification; output exists", extra={"key": key, "version": source_version})
        summary.duplicate = True
        return summary
    execution_input = {"run": summary.execution, "bucket": bucket, "key": key, "version": version_id, "format": fmt}
    states = client("stepfunctions")
    try:
        states.start_execution(
            stateMachineArn=settings.state_machine_arn, name=summary.execution, input=json.dumps(execution_input)
        )
    except states.exceptions.ExecutionAlreadyExists:
        logger.info("big batch file already started", extra={"key": key, "execution": summary.execution})
        summary.duplicate = True
        return summary
    metrics.add_metric(name="BigBatchFilesStarted", unit=MetricUnit.Count, value=1)
    logger.info(
        "big batch file handed to the state machine",
        extra={"key": key, "bytes": size, "estimated_records": records, "execution": summary.execution},
    )
    return summary

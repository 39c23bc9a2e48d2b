"""The hand-off of a big batch file to the model's Distributed Map state machine.

A file goes there when scoring it in this invocation is predicted to take more than half the time the
invocation has left: its records are estimated from its first MiB, and the throughput is measured on
that sample, by this function, at its memory's CPU share. A configured threshold of records or bytes
replaces the prediction. The execution is named after the file's key and version, so each source
version runs once however often S3 notifies. Below the threshold nothing changes: the small path
scores the file here.
"""

from __future__ import annotations

import json
import time
from typing import Any

from contract import big_batch
from handlers.runtime import jsonio, retries
from handlers.runtime import rows as rowlib
from handlers.runtime.aws import client
from handlers.runtime.batch.files import already_written, file_format, new_summary, object_params, source_version_of
from handlers.runtime.batch.sink import FileSummary
from handlers.runtime.batch.text import csv_record, numeric
from handlers.runtime.errors import OnnxfnError
from handlers.runtime.model_store import ModelStore
from handlers.runtime.observability import MetricUnit, logger, metrics
from handlers.runtime.s3_io import head
from handlers.runtime.settings import BigBatchSettings, DataSettings

SAMPLE_BYTES = 1024 * 1024
MIN_RECORDS = 1000  # fewer records are scored here without a measurement
PROBE_ROWS = 256
SHARE_OF_TIME_LEFT = 0.5  # the rest is for reading, writing and a slower tail of the file


def sample_records(s3: Any, bucket: str, key: str, version_id: str | None, size: int) -> tuple[int, list[bytes]]:
    """Records in the file (counted when it fits in the sample, else its size over the sample's bytes
    per line) and the sample's whole non-blank lines."""
    if size <= 0:
        return 0, []
    params = object_params(bucket, key, version_id)
    sample = s3.get_object(Range=f"bytes=0-{SAMPLE_BYTES - 1}", **params)["Body"].read()
    whole = sample if len(sample) >= size else sample[: sample.rfind(b"\n") + 1]
    lines = [line for line in whole.split(b"\n") if line.strip()]
    if len(sample) >= size:
        return len(lines), lines
    return int(size * whole.count(b"\n") / max(len(whole), 1)), lines


def rows_per_second(store: ModelStore, fmt: str, lines: list[bytes]) -> float:
    """Records per second this function parses and scores, measured on the sample's first rows."""
    loaded = store.get_model()  # loading is not part of the rate
    started = time.perf_counter()
    rows = []
    for number, line in enumerate(lines[:PROBE_ROWS], start=1):
        try:
            if fmt == "csv":
                cells = csv_record(line.decode("utf-8", "replace"))
                if number == 1 and not numeric(cells):
                    continue
                rows.append(rowlib.row_from_csv(number, cells, loaded.manifest))
            else:
                rows.append(rowlib.row_from_line(number, line, loaded.manifest))
        except OnnxfnError:
            continue
    rowlib.score(loaded, rows)
    return max(len(rows), 1) / max(time.perf_counter() - started, 1e-6)


def _started(states: Any, state_machine_arn: str, name: str) -> bool:
    """An execution of that name exists: this version was handed off before (whatever the prediction
    says now, it is not scored twice)."""
    arn = state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"
    try:
        states.describe_execution(executionArn=arn)
    except states.exceptions.ExecutionDoesNotExist:
        return False
    return True


def _big(
    s3: Any,
    store: ModelStore,
    settings: BigBatchSettings,
    bucket: str,
    key: str,
    version_id: str | None,
    size: int | None,
    fmt: str,
) -> dict[str, Any] | None:
    """What makes the file big (its size, records, measured rate), or None: it is scored here."""
    if size is None:
        size = int((head(s3, bucket, key) or {}).get("ContentLength", 0))
    facts: dict[str, Any] = {"bytes": size}
    if settings.bytes is not None and size >= settings.bytes:
        return facts
    records, lines = sample_records(s3, bucket, key, version_id, size)
    facts["estimated_records"] = records
    if fmt == "jsonl" and not all(_json(line) for line in lines):
        # Step Functions' JSON Lines reader fails the whole Map on a line that is not JSON; the small
        # path fails that line alone (or reads it as text, for a text model)
        logger.info("batch file scored here: not every line is JSON", extra={"key": key, **facts})
        return None
    if settings.rows is not None:
        return facts if records >= settings.rows else None
    if records < MIN_RECORDS:
        return None
    rate = rows_per_second(store, fmt, lines)
    facts.update(rows_per_second=round(rate), seconds_left=round(retries.time_left(), 1))
    if records / rate <= SHARE_OF_TIME_LEFT * retries.time_left():
        logger.info("batch file scored here: predicted to fit", extra={"key": key, **facts})
        return None
    return facts


def _json(line: bytes) -> bool:
    try:
        jsonio.loads(line)
    except (jsonio.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


def maybe_hand_off(
    s3: Any,
    data: DataSettings,
    store: ModelStore,
    bucket: str,
    key: str,
    version_id: str | None,
    etag: str | None,
    size: int | None,
) -> FileSummary | None:
    """Start the state machine for a big file and return what was done; None: score it here."""
    settings = data.big_batch
    fmt = file_format(key)
    if settings is None or fmt not in settings.formats:
        return None
    if version_id is None:  # a notification without one (moto's): the Map must read this very version
        found = head(s3, bucket, key) or {}
        if etag is None or str(found.get("ETag", "")).strip('"') == etag.strip('"'):
            version_id = found.get("VersionId")
    source_version = source_version_of(version_id, etag)
    summary = new_summary(data, bucket, key, source_version, fmt)
    summary.execution = big_batch.execution_name(key, source_version)
    if already_written(s3, data, summary):
        logger.info("duplicate notification; output exists", extra={"key": key, "version": source_version})
        return summary
    states = client("stepfunctions")
    if _started(states, settings.state_machine_arn, summary.execution):
        logger.info("big batch file already handed off", extra={"key": key, "execution": summary.execution})
        summary.duplicate = True
        return summary
    facts = _big(s3, store, settings, bucket, key, version_id, size, fmt)
    if facts is None:
        return None
    execution_input = {
        "run": summary.execution,
        "bucket": bucket,
        "key": key,
        "version": version_id,
        "source_version": source_version,
        "format": fmt,
    }
    try:
        states.start_execution(
            stateMachineArn=settings.state_machine_arn, name=summary.execution, input=json.dumps(execution_input)
        )
    except states.exceptions.ExecutionAlreadyExists:  # started in between
        logger.info("big batch file already started", extra={"key": key, "execution": summary.execution})
        summary.duplicate = True
        return summary
    metrics.add_metric(name="BigBatchFilesStarted", unit=MetricUnit.Count, value=1)
    logger.info(
        "big batch file handed to the state machine", extra={"key": key, "execution": summary.execution, **facts}
    )
    return summary

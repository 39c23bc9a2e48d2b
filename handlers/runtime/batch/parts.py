"""A big batch file's two steps inside the state machine: score one batch of items into a part, and
join the parts into the outbox files the small path writes.

A part is named after its first item's index (``<run prefix><first>.out``, its errors in
``<first>.err``) and carries its counts as object metadata, so scoring a batch again (a retried
child) overwrites its part. Items with no part (their batch failed after its retries, within the
tolerated share) are written to the errors file line by line, so in = scored + failed always holds.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import Any

from contract import big_batch
from handlers.runtime import rows as rowlib
from handlers.runtime.batch.files import already_written, finish, new_summary, object_params, open_sink
from handlers.runtime.batch.sink import FileSummary, Sink, score_rows
from handlers.runtime.batch.text import csv_record, jsonl_answer, numeric, write_csv_answer
from handlers.runtime.errors import InvalidInput, OnnxfnError
from handlers.runtime.model_store import ModelStore
from handlers.runtime.observability import MetricUnit, logger, metrics
from handlers.runtime.s3_io import iter_lines
from handlers.runtime.settings import DataSettings

PART = re.compile(r"(\d{12})\.out$")
NOT_SCORED = "not scored: its batch failed after the batch function's retries (within the tolerated share)"
EXPECTED_RUN = f"{{{', '.join(big_batch.RUN_FIELDS)}}}"


def checked_run(run: Any, data: DataSettings) -> dict[str, Any]:
    """The run's fields, checked: this model's bucket and inbox, a format the Map reads."""
    if not isinstance(run, Mapping):
        raise InvalidInput(f"expected the run as an object {EXPECTED_RUN}, got {type(run).__name__}")
    missing = [name for name in ("run", "bucket", "key", "format") if not isinstance(run.get(name), str)]
    if missing:
        raise InvalidInput(f"the run lacks {', '.join(missing)}; expected {EXPECTED_RUN}")
    if run["format"] not in big_batch.FORMATS:
        raise InvalidInput(f"format {run['format']!r}: expected one of {', '.join(big_batch.FORMATS)}")
    if run["bucket"] != data.bucket or not run["key"].startswith(data.inbox_prefix):
        raise InvalidInput(f"s3://{run['bucket']}/{run['key']}: expected a file under {data.inbox_prefix}")
    return dict(run)


def _checked_items(items: Any) -> list[dict[str, Any]]:
    """A Map batch's items: ``{index, row}`` objects with consecutive indices."""
    if not isinstance(items, list) or not items:
        raise InvalidInput('expected "Items": a non-empty list of {"index": i, "row": record}')
    for position, item in enumerate(items):
        index = item.get(big_batch.INDEX) if isinstance(item, Mapping) else None
        if not isinstance(index, int) or isinstance(index, bool) or big_batch.ROW not in item:
            raise InvalidInput(f'Items[{position}]: expected {{"index": i, "row": record}}, got {str(item)[:80]}')
        if index != items[0][big_batch.INDEX] + position:
            raise InvalidInput(f"Items[{position}]: index {index} does not follow {items[0][big_batch.INDEX]}")
    return items


def _record(fmt: str, row: Any) -> Any:
    """The record as the small path reads it: a CSV row's cells in column order, without the empty
    cells the reader pads a short row with."""
    if fmt != "csv":
        return row
    if not isinstance(row, Mapping):
        raise InvalidInput(f"expected a CSV row of named cells, got {type(row).__name__}")
    cells = [str(row.get(name, "")) for name in big_batch.csv_headers(len(row))]
    while cells and cells[-1] == "":
        cells.pop()
    return cells


def is_csv_header(index: int, fmt: str, record: Any) -> bool:
    """The first row of a CSV file is a header when it is not all numbers, as on the small path."""
    return fmt == "csv" and index == 0 and not numeric(record)


def score_part(event: dict[str, Any], s3: Any, data: DataSettings, store: ModelStore) -> dict[str, int]:
    """Score one Map batch and write its part; returns the batch's counts."""
    run = checked_run(event.get(big_batch.BATCH_INPUT), data)
    items = _checked_items(event.get(big_batch.ITEMS))
    fmt = run["format"]
    loaded = store.get_model()
    manifest = loaded.manifest
    output, errors = bytearray(), bytearray()
    records, pending = 0, []
    for item in items:
        index = item[big_batch.INDEX]
        line = index + 1
        try:
            record = _record(fmt, item[big_batch.ROW])
        except OnnxfnError as exc:
            records += 1
            errors += json.dumps({"line": line, "error": exc.message}).encode() + b"\n"
            continue
        if is_csv_header(index, fmt, record):
            continue
        records += 1
        try:
            if fmt == "csv":
                pending.append(rowlib.row_from_csv(line, record, manifest))
            else:
                pending.append(rowlib.row_from_document(line, record, manifest))
        except OnnxfnError as exc:
            errors += json.dumps({"line": line, "error": exc.message}).encode() + b"\n"
    sink = _PartSink(errors)
    header: list[str] | None = None

    def write(outcome: rowlib.Outcome) -> None:
        nonlocal header
        if fmt == "csv":
            header = write_csv_answer(output.extend, outcome, header)
        else:
            output.extend(jsonl_answer(manifest, outcome))

    score_rows(loaded, sink, pending, write)
    scored = sink.summary.scored
    counts = {"first": items[0][big_batch.INDEX], "items": len(items), "records": records, "scored": scored}
    name = f"{big_batch.parts_prefix(data.outbox_prefix, run['run'])}{counts['first']:012d}"
    tag = "=".join(big_batch.PART_TAG)  # expired by the bucket's lifecycle if never assembled
    if errors:
        s3.put_object(
            Bucket=data.bucket, Key=f"{name}.err", Body=bytes(errors), ContentType="application/x-ndjson", Tagging=tag
        )
    s3.put_object(
        Bucket=data.bucket,
        Key=f"{name}.out",
        Body=bytes(output),
        ContentType="application/octet-stream",
        Metadata={k: str(v) for k, v in counts.items()},
        Tagging=tag,
    )
    metrics.add_metric(name="RecordsScored", unit=MetricUnit.Count, value=scored)
    metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=records - scored)
    return {**counts, "failed": records - scored}


class _PartSink:
    """What ``score_rows`` needs of a sink (``fail`` and the summary's counts), kept in memory."""

    def __init__(self, errors: bytearray) -> None:
        self.summary = FileSummary("", "", "", "", None, None)
        self._errors = errors

    def fail(self, ref: int | str, message: str) -> None:
        self.summary.failed += 1
        self._errors += json.dumps({"line": ref, "error": message}).encode() + b"\n"


def _parts(s3: Any, bucket: str, prefix: str) -> list[tuple[int, str]]:
    """The run's parts in item order: (first index, key without its suffix)."""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            match = PART.search(entry["Key"])
            if match:
                found.append((int(match.group(1)), entry["Key"][: -len(".out")]))
    return sorted(found)


def _source_items(s3: Any, run: dict[str, Any]) -> Iterator[tuple[int, bool]]:
    """(index, is_record) for every item the Map read: each non-blank line, a CSV header excepted."""
    body = s3.get_object(**object_params(run["bucket"], run["key"], run.get("version")))["Body"]
    index = 0
    for line in iter_lines(body):
        if not line.strip():
            continue
        cells = csv_record(line.decode("utf-8", "replace"), strict=False) if index == 0 else None
        yield index, not is_csv_header(index, run["format"], cells)
        index += 1


def assemble(event: dict[str, Any], s3: Any, data: DataSettings, store: ModelStore) -> dict[str, Any]:
    """Join the run's parts into the output, ``.errors.jsonl`` and ``.summary.json``; remove the parts."""
    payload = event[big_batch.ASSEMBLE]
    run = checked_run(payload, data)
    failure = run.get(big_batch.FAILURE)
    key, fmt = run["key"], run["format"]
    source_version = run.get("source_version") or run.get("version") or "unversioned"
    summary = new_summary(data, run["bucket"], key, source_version, fmt)
    summary.execution = run["run"]
    parts = _parts(s3, data.bucket, big_batch.parts_prefix(data.outbox_prefix, run["run"]))
    if already_written(s3, data, summary):
        _remove(s3, data.bucket, parts)  # a retried assembly whose first attempt wrote the output
        return asdict(summary)
    started = time.perf_counter()
    sink = open_sink(s3, data, store, summary)
    try:
        if failure:
            summary.records_in = sum(1 for _, is_record in _source_items(s3, run) if is_record)
            summary.failed = summary.records_in
            cause = failure.get("Cause", "") if isinstance(failure, Mapping) else failure
            error = failure.get("Error", "States.Runtime") if isinstance(failure, Mapping) else "States.Runtime"
            message = f"the Distributed Map failed: {error}: {str(cause)[:500]}"
            sink.errors.write(json.dumps({"line": 0, "error": message}).encode() + b"\n")
            summary.output_key = None
        else:
            _join(s3, data.bucket, run, parts, sink)
        summary.milliseconds = round((time.perf_counter() - started) * 1000, 1)
        finish(s3, data, sink)
    except BaseException:
        sink.abort()
        raise
    _remove(s3, data.bucket, parts)
    metrics.add_metric(name="RecordsIn", unit=MetricUnit.Count, value=summary.records_in)
    metrics.add_metric(name="BigBatchFilesAssembled", unit=MetricUnit.Count, value=1)
    logger.info("big batch file assembled", extra={"key": key, "parts": len(parts), **asdict(summary)})
    return asdict(summary)


def _join(s3: Any, bucket: str, run: dict[str, Any], parts: list[tuple[int, str]], sink: Sink) -> None:
    """Parts in item order; every record no part covers failed with its batch."""
    summary = sink.summary
    cursor = 0  # the next item index no part has covered
    queue = deque(parts)
    header_written = False
    for index, is_record in _source_items(s3, run):
        while queue and queue[0][0] < index:  # a part that starts inside one already joined
            queue.popleft()
        if queue and index == queue[0][0]:
            _, stem = queue.popleft()
            got = s3.get_object(Bucket=bucket, Key=f"{stem}.out")
            counts = {k: int(v) for k, v in got.get("Metadata", {}).items() if k in ("items", "records", "scored")}
            body = got["Body"].read()
            if run["format"] == "csv" and body:
                _, _, rows = body.partition(b"\n")
                body = rows if header_written else body
                header_written = True
            sink.output.write(body)
            if counts["records"] > counts["scored"]:
                sink.errors.write(s3.get_object(Bucket=bucket, Key=f"{stem}.err")["Body"].read())
            summary.records_in += counts["records"]
            summary.scored += counts["scored"]
            summary.failed += counts["records"] - counts["scored"]
            cursor = index + counts["items"]
        elif index >= cursor and is_record:
            summary.records_in += 1
            summary.failed += 1
            sink.errors.write(json.dumps({"line": index + 1, "error": NOT_SCORED}).encode() + b"\n")
    if queue:
        raise ValueError(f"parts beyond the file's {cursor} items: {[stem for _, stem in queue][:3]}")


def _remove(s3: Any, bucket: str, parts: list[tuple[int, str]]) -> None:
    keys = [f"{stem}{suffix}" for _, stem in parts for suffix in (".out", ".err")]
    for start in range(0, len(keys), 1000):
        chunk = [{"Key": k} for k in keys[start : start + 1000]]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})

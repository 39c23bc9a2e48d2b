"""A big batch file's two steps inside the state machine: score one batch of items into a part, and
join the parts into the outbox files the small path writes.

A part's key carries its first item's index and its counts (``<first>-<items>-<records>-<scored>``),
so assembling lists the run's prefix and reads nothing else to know what each part holds. Items with
no part (their batch failed after its retries, within the tolerated percentage) are written to the
errors file line by line, so in = scored + failed always holds. Scoring a batch again writes the
same part: a retried child is harmless.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

from contract import big_batch
from handlers.runtime import rows as rowlib
from handlers.runtime.batch.files import already_written, finish, new_summary, open_sink
from handlers.runtime.batch.sink import FileSummary, Sink, score_rows
from handlers.runtime.batch.text import csv_record, jsonl_answer, numeric, write_csv_answer
from handlers.runtime.errors import InvalidInput, OnnxfnError
from handlers.runtime.model_store import ModelStore
from handlers.runtime.observability import MetricUnit, logger, metrics
from handlers.runtime.s3_io import iter_lines
from handlers.runtime.settings import DataSettings

PART = re.compile(r"(\d{12})-(\d+)-(\d+)-(\d+)\.out$")
NOT_SCORED = "not scored: its batch failed after the batch function's retries ({})"


def _record(fmt: str, item: dict[str, Any]) -> Any:
    row = item[big_batch.ROW]
    if fmt == "csv":
        if not isinstance(row, dict):
            raise InvalidInput("expected a CSV record")
        return [row[name] for name in big_batch.csv_headers(len(row))]
    return row


def is_csv_header(index: int, fmt: str, record: Any) -> bool:
    """The first row of a CSV file is a header when it is not all numbers, as on the small path."""
    return fmt == "csv" and index == 0 and not numeric(record)


def score_part(event: dict[str, Any], s3: Any, data: DataSettings, store: ModelStore) -> dict[str, int]:
    """Score one Map batch and write its part; returns the batch's counts (the Map's result)."""
    run, items = event.get(big_batch.BATCH_INPUT) or {}, event.get(big_batch.ITEMS) or []
    fmt = run.get("format")
    if fmt not in big_batch.FORMATS or not run.get("run") or not items:
        raise InvalidInput(f"expected a Map batch: {{Items: [...], BatchInput: {{{', '.join(big_batch.RUN_FIELDS)}}}}}")
    loaded = store.get_model()
    manifest = loaded.manifest
    first = int(items[0][big_batch.INDEX])
    prefix = big_batch.parts_prefix(data.outbox_prefix, run["run"])
    output, errors = bytearray(), bytearray()
    records, pending = 0, []
    for item in items:
        index = int(item[big_batch.INDEX])
        line = index + 1
        try:
            record = _record(fmt, item)
            if is_csv_header(index, fmt, record):
                continue
            records += 1
            row = (
                rowlib.row_from_csv(line, record, manifest)
                if fmt == "csv"
                else rowlib.row_from_document(line, record, manifest)
            )
        except (OnnxfnError, KeyError, TypeError) as exc:
            message = exc.message if isinstance(exc, OnnxfnError) else f"not a record: {type(exc).__name__}: {exc}"
            errors += json.dumps({"line": line, "error": message}).encode() + b"\n"
            continue
        pending.append(row)
    summary = FileSummary(source_bucket="", source_key="", source_version="", format=fmt, output_key="", errors_key="")
    sink = _PartSink(summary, errors)
    header: list[str] | None = None

    def write(outcome: rowlib.Outcome) -> None:
        nonlocal header
        if fmt == "csv":
            header = write_csv_answer(output.extend, outcome, header)
        else:
            output.extend(jsonl_answer(manifest, outcome))

    score_rows(loaded, sink, pending, write)  # type: ignore[arg-type]
    scored = summary.scored
    failed = records - scored
    name = f"{prefix}{first:012d}-{len(items)}-{records}-{scored}"
    if errors:
        s3.put_object(Bucket=data.bucket, Key=f"{name}.err", Body=bytes(errors), ContentType="application/x-ndjson")
    s3.put_object(Bucket=data.bucket, Key=f"{name}.out", Body=bytes(output), ContentType="application/octet-stream")
    metrics.add_metric(name="RecordsScored", unit=MetricUnit.Count, value=scored)
    metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=failed)
    return {"first": first, "items": len(items), "records": records, "scored": scored, "failed": failed}


class _PartSink:
    """What ``score_rows`` needs of a sink: counts and failures, here kept in memory for one part."""

    def __init__(self, summary: FileSummary, errors: bytearray) -> None:
        self.summary, self._errors = summary, errors

    def fail(self, ref: int | str, message: str) -> None:
        self.summary.failed += 1
        self._errors += json.dumps({"line": ref, "error": message}).encode() + b"\n"


def _parts(s3: Any, bucket: str, prefix: str) -> list[tuple[int, int, int, int, str]]:
    """The run's parts in item order: (first, items, records, scored, key without suffix)."""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            match = PART.search(entry["Key"])
            if match:
                first, items, records, scored = (int(g) for g in match.groups())
                found.append((first, items, records, scored, entry["Key"][: -len(".out")]))
    return sorted(found)


def _source_items(s3: Any, run: dict[str, Any]) -> Iterator[tuple[int, bool]]:
    """(index, is_record) for every item the Map read: each non-blank line, a CSV header excepted."""
    params = {
        "Bucket": run["bucket"],
        "Key": run["key"],
        **({"VersionId": run["version"]} if run.get("version") else {}),
    }
    body = s3.get_object(**params)["Body"]
    index = 0
    for line in iter_lines(body):
        if not line.strip():
            continue
        header = (
            index == 0
            and run["format"] == "csv"
            and not numeric(csv_record(line.decode("utf-8", "replace"), strict=False))
        )
        yield index, not header
        index += 1


def assemble(event: dict[str, Any], s3: Any, data: DataSettings, store: ModelStore) -> dict[str, Any]:
    """Join the run's parts into the output, ``.errors.jsonl`` and ``.summary.json``; remove the parts."""
    run = event[big_batch.ASSEMBLE]
    failure = run.get(big_batch.FAILURE)
    key, fmt = run["key"], run["format"]
    source_version = run.get("source_version") or run.get("version") or "unversioned"
    summary = new_summary(data, run["bucket"], key, source_version, fmt)
    summary.execution = run["run"]
    prefix = big_batch.parts_prefix(data.outbox_prefix, run["run"])
    parts = _parts(s3, data.bucket, prefix)
    if already_written(s3, data, summary):
        _remove(s3, data.bucket, parts)  # a retried assembly whose first attempt wrote the output
        return _dict(summary)
    started = time.perf_counter()
    sink = open_sink(s3, data, store, summary)
    try:
        if failure:
            summary.records_in = sum(1 for _, is_record in _source_items(s3, run) if is_record)
            summary.failed = summary.records_in
            reason = f"{failure.get('Error', 'States.Runtime')}: {str(failure.get('Cause', ''))[:500]}"
            sink.errors.write(
                json.dumps({"line": 0, "error": f"the Distributed Map failed: {reason}"}).encode() + b"\n"
            )
            summary.output_key = None
        else:
            _join(s3, data.bucket, run, parts, sink)
        summary.milliseconds = round((time.perf_counter() - started) * 1000, 1)
        finish(s3, data, sink)
    except BaseException:
        sink.abort()
        raise
    _remove(s3, data.bucket, parts)
    metrics.add_metric(name="BigBatchFilesAssembled", unit=MetricUnit.Count, value=1)
    logger.info("big batch file assembled", extra={"key": key, "parts": len(parts), **_dict(summary)})
    return _dict(summary)


def _join(s3: Any, bucket: str, run: dict[str, Any], parts: list[tuple[int, int, int, int, str]], sink: Sink) -> None:
    """Parts in item order; every record between them failed with its batch."""
    summary = sink.summary
    gap_reason = NOT_SCORED.format("tolerated by the state machine's failure percentage")
    cursor = 0  # the next item index no part has covered
    queue = list(parts)
    header_written = False
    for index, is_record in _source_items(s3, run):
        if queue and index == queue[0][0]:
            first, items, records, scored, stem = queue.pop(0)
            body = s3.get_object(Bucket=bucket, Key=f"{stem}.out")["Body"].read()
            if run["format"] == "csv" and body:
                _, _, rows = body.partition(b"\n")
                body = rows if header_written else body
                header_written = True
            sink.output.write(body)
            if records > scored:
                sink.errors.write(s3.get_object(Bucket=bucket, Key=f"{stem}.err")["Body"].read())
            summary.records_in += records
            summary.scored += scored
            summary.failed += records - scored
            cursor = first + items
        elif index >= cursor and is_record:
            summary.records_in += 1
            summary.failed += 1
            sink.errors.write(json.dumps({"line": index + 1, "error": gap_reason}).encode() + b"\n")
    if queue:
        raise ValueError(f"parts beyond the file's {cursor} items: {[p[4] for p in queue][:3]}")


def _remove(s3: Any, bucket: str, parts: list[tuple[int, int, int, int, str]]) -> None:
    keys = [f"{stem}{suffix}" for *_, stem in parts for suffix in (".out", ".err")]
    for start in range(0, len(keys), 1000):
        s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True}
        )


def _dict(summary: FileSummary) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(summary)

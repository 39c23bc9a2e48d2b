"""Scoring one S3 file from ``inbox/<model>/`` into ``outbox/<model>/``, streamed and micro-batched.

JSON Lines (``.jsonl``, ``.ndjson``, ``.json``), CSV (``.csv``, single-input tabular models), and
``.npy`` / ``.npz`` tensors (answered as ``.npz``). A record that fails its checks goes to
``<name>.errors.jsonl`` with its line number and message; the others are scored. The summary goes to
``<name>.summary.json``; the output is written last and only whole, so an output that exists is
complete. A repeated notification for the same object version finds the output and does nothing.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import asdict
from typing import Any

from handlers.runtime.batch.arrays import read_npy, read_npz
from handlers.runtime.batch.sink import FileSummary, Sink, chunk_rows, file_failed
from handlers.runtime.batch.text import read_csv, read_jsonl
from handlers.runtime.errors import OnnxfnError
from handlers.runtime.model_store import ModelStore
from handlers.runtime.observability import MetricUnit, logger, metrics
from handlers.runtime.s3_io import head
from handlers.runtime.settings import DataSettings

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".npy": "npy", ".npz": "npz"}


SOURCE_VERSION = "onnxfn-source-version"


def process_object(
    s3: Any, data: DataSettings, store: ModelStore, bucket: str, key: str, version_id: str | None, etag: str | None
) -> FileSummary:
    """Score ``s3://bucket/key`` (that version) unless its output already exists for that version."""
    fmt = file_format(key)
    suffix = _suffix(key)
    source_version = source_version_of(version_id, etag)
    summary = new_summary(data, bucket, key, source_version, fmt)
    if already_written(s3, data, summary):
        logger.info("duplicate notification; output exists", extra={"key": key, "version": source_version})
        return summary
    started = time.perf_counter()
    sink = open_sink(s3, data, store, summary)
    try:
        if fmt == "unsupported":
            sink.fail(0, f"unsupported file type {suffix or '(none)'!r}; expected one of {', '.join(FORMATS)}")
            summary.records_in = 1
        else:
            loaded = store.get_model()
            body = s3.get_object(**object_params(bucket, key, version_id))["Body"]
            handlers = {"jsonl": read_jsonl, "csv": read_csv, "npy": read_npy, "npz": read_npz}
            try:
                handlers[fmt](body, loaded, sink, chunk_rows(data, loaded))
            except OnnxfnError as exc:
                file_failed(sink, exc.message)
            except (ValueError, TypeError, OSError, EOFError, AttributeError, KeyError, zipfile.BadZipFile) as exc:
                # A malformed file is the sender's problem: report it, don't retry it into the DLQ.
                file_failed(sink, f"the file could not be read as {fmt}: {type(exc).__name__}: {str(exc)[:200]}")
        summary.milliseconds = round((time.perf_counter() - started) * 1000, 1)
        finish(s3, data, sink)
    except BaseException:
        sink.abort()
        raise
    seconds = max(summary.milliseconds / 1000, 1e-9)
    metrics.add_metric(name="RecordsIn", unit=MetricUnit.Count, value=summary.records_in)
    metrics.add_metric(name="RecordsScored", unit=MetricUnit.Count, value=summary.scored)
    metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=summary.failed)
    metrics.add_metric(name="RowsPerSecond", unit=MetricUnit.CountPerSecond, value=summary.scored / seconds)
    logger.info("file scored", extra={"key": key, **{k: v for k, v in asdict(summary).items() if k != "source_key"}})
    return summary


def _suffix(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def file_format(key: str) -> str:
    """The format a file's suffix names, or ``unsupported``."""
    return FORMATS.get(_suffix(key), "unsupported")


def outbox_keys(data: DataSettings, key: str, fmt: str) -> tuple[str, str]:
    """The output and errors keys of an inbox file (``.npy`` is answered as ``.npz``)."""
    name = key[len(data.inbox_prefix) :]
    suffix = _suffix(key)
    output_name = name[: -len(suffix)] + ".npz" if fmt == "npy" else name
    return f"{data.outbox_prefix}{output_name}", f"{data.outbox_prefix}{name}.errors.jsonl"


def object_params(bucket: str, key: str, version_id: str | None) -> dict[str, str]:
    """GetObject's parameters for that version of the object (the latest when there is none)."""
    return {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}


def source_version_of(version_id: str | None, etag: str | None) -> str:
    """What the outbox files record as the source's version: its version id, else its ETag."""
    return version_id or (etag or "").strip('"') or "unversioned"


def new_summary(data: DataSettings, bucket: str, key: str, source_version: str, fmt: str) -> FileSummary:
    """A file's summary before any record is read: where its output and errors go."""
    output_key, errors_key = outbox_keys(data, key, fmt)
    return FileSummary(
        source_bucket=bucket,
        source_key=key,
        source_version=source_version,
        format=fmt,
        output_key=output_key,
        errors_key=errors_key,
    )


def already_written(s3: Any, data: DataSettings, summary: FileSummary) -> bool:
    """The output exists for this source version: mark the summary a duplicate."""
    existing = head(s3, data.bucket, summary.output_key or "")
    summary.duplicate = bool(existing and existing.get("Metadata", {}).get(SOURCE_VERSION) == summary.source_version)
    return summary.duplicate


def open_sink(s3: Any, data: DataSettings, store: ModelStore, summary: FileSummary) -> Sink:
    """The file's output and errors writers, their objects carrying the source and model versions."""
    manifest = store.manifest()
    summary.model, summary.model_version = manifest.name, manifest.version
    metadata = {SOURCE_VERSION: summary.source_version, "onnxfn-model-version": manifest.version}
    return Sink(s3, data.bucket, summary, metadata)


def summary_key(data: DataSettings, key: str) -> str:
    return f"{data.outbox_prefix}{key[len(data.inbox_prefix) :]}.summary.json"


def finish(s3: Any, data: DataSettings, sink: Sink) -> None:
    """Errors file, then summary, then the output last: an output that exists is complete."""
    summary = sink.summary
    if summary.failed:
        sink.errors.commit()
    else:
        s3.delete_object(Bucket=data.bucket, Key=summary.errors_key)  # a stale one from an older version
        summary.errors_key = None
    if summary.format == "unsupported":
        summary.output_key = None
    key = summary_key(data, summary.source_key)
    s3.put_object(
        Bucket=data.bucket, Key=key, Body=json.dumps(asdict(summary), indent=2).encode(), ContentType="application/json"
    )
    if summary.output_key is not None:
        sink.output.commit()
    else:
        sink.output.abort()

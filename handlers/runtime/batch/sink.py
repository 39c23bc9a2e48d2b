"""What one batch file produces: its summary, its output and errors objects, and the chunking
every format shares."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from handlers.runtime import jsonio
from handlers.runtime import rows as rowlib
from handlers.runtime.errors import OnnxfnError
from handlers.runtime.model_store import LoadedModel
from handlers.runtime.s3_io import ObjectWriter
from handlers.runtime.settings import DataSettings

ROWS_PER_GB = 8192  # rows held per chunk for each GB of function memory


@dataclass
class FileSummary:
    source_bucket: str
    source_key: str
    source_version: str
    format: str
    output_key: str | None
    errors_key: str | None
    records_in: int = 0
    scored: int = 0
    failed: int = 0
    milliseconds: float = 0.0
    model: str = ""
    model_version: str = ""
    duplicate: bool = False
    execution: str | None = None  # a big file: the state machine's execution that scores it


class Sink:
    """The output and errors objects of one file, and the counts that go in the summary."""

    def __init__(self, s3: Any, bucket: str, summary: FileSummary, metadata: dict[str, str]) -> None:
        self.summary = summary
        content_type = "application/x-ndjson" if summary.format == "jsonl" else "text/csv"
        if summary.format in ("npy", "npz"):
            content_type = "application/octet-stream"
        assert summary.output_key is not None and summary.errors_key is not None
        self.output = ObjectWriter(s3, bucket, summary.output_key, content_type, metadata)
        self.errors = ObjectWriter(s3, bucket, summary.errors_key, "application/x-ndjson", metadata)
        self.csv_header: list[str] | None = None

    def fail(self, ref: int | str, message: str) -> None:
        self.summary.failed += 1
        self.errors.write(json.dumps({"line": ref, "error": message}).encode() + b"\n")

    def abort(self) -> None:
        self.output.abort()
        self.errors.abort()


def chunk_rows(data: DataSettings, loaded: LoadedModel | None = None) -> int:
    """Rows held per chunk: scaled to memory, and no more elements than the manifest allows a request."""
    rows = max(64, ROWS_PER_GB * data.memory_mb // 1024)
    if loaded is not None:
        per_row = max(1, sum(int(np.prod([d for d in t.shape[1:] if d > 0] or [1])) for t in loaded.manifest.inputs))
        rows = min(rows, max(loaded.manifest.limits.max_batch, loaded.manifest.limits.max_elements // per_row))
    return max(1, rows)


def file_failed(sink: Sink, message: str) -> None:
    """The whole file is rejected: one failure record, no output, counts kept honest."""
    # Records read so far all count as failed: without an output, none of them was delivered.
    sink.summary.records_in = max(sink.summary.records_in, 1)
    sink.summary.scored = 0
    sink.summary.failed = sink.summary.records_in
    sink.errors.write(jsonio.dumps({"line": 0, "error": message}) + b"\n")
    sink.summary.output_key = None


class RowSink(Protocol):
    """Where scored rows' counts and failures go: a file's ``Sink``, or one part's."""

    summary: FileSummary

    def fail(self, ref: int | str, message: str) -> None: ...


def score_rows(loaded: LoadedModel, sink: RowSink, pending: list[rowlib.Row], write: Any) -> None:
    for outcome in rowlib.score(loaded, pending):
        if outcome.error is not None:
            sink.fail(outcome.row.ref, outcome.error)
        else:
            sink.summary.scored += 1
            write(outcome)


def parsed_chunks(
    lines: Iterator[tuple[int, Any]], parse: Any, sink: Sink, chunk_rows: int
) -> Iterator[list[rowlib.Row]]:
    """Chunks of checked rows; a record that fails its checks is written to the errors file."""
    pending: list[rowlib.Row] = []
    size = 0
    for number, raw in lines:
        sink.summary.records_in += 1
        try:
            row = parse(number, raw)
        except OnnxfnError as exc:
            sink.fail(number, exc.message)
            continue
        pending.append(row)
        size += row.batch
        if size >= chunk_rows:
            yield pending
            pending, size = [], 0
    if pending:
        yield pending

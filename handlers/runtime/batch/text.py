"""JSON Lines and CSV batch files: one record per line, parsed, checked and scored in chunks."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import numpy as np

from contract.manifest import Manifest
from handlers.runtime import jsonio
from handlers.runtime import rows as rowlib
from handlers.runtime.batch.sink import Sink, parsed_chunks, score_rows
from handlers.runtime.errors import InvalidInput
from handlers.runtime.model_store import LoadedModel
from handlers.runtime.s3_io import iter_lines


def read_jsonl(body: Any, loaded: LoadedModel, sink: Sink, chunk_rows: int) -> None:
    manifest = loaded.manifest

    def write(outcome: rowlib.Outcome) -> None:
        sink.output.write(jsonl_answer(manifest, outcome))

    numbered = ((n, line) for n, line in enumerate(iter_lines(body), start=1) if line.strip())
    for chunk in parsed_chunks(numbered, lambda n, line: rowlib.row_from_line(n, line, manifest), sink, chunk_rows):
        score_rows(loaded, sink, chunk, write)


def read_csv(body: Any, loaded: LoadedModel, sink: Sink, chunk_rows: int) -> None:
    manifest = loaded.manifest
    if len(manifest.inputs) != 1 or manifest.inputs[0].datatype == "BYTES":
        raise InvalidInput("CSV files are for single-input tabular models; use JSON Lines")

    def cells() -> Iterator[tuple[int, str]]:
        for number, line in enumerate(iter_lines(body), start=1):
            if not line.strip():
                continue
            text = line.decode("utf-8", "replace")
            if number == 1 and not numeric(csv_record(text, strict=False)):
                continue  # a header line
            yield number, text

    def write(outcome: rowlib.Outcome) -> None:
        sink.csv_header = write_csv_answer(sink.output.write, outcome, sink.csv_header)

    parse = lambda n, text: rowlib.row_from_csv(n, csv_record(text), manifest)  # noqa: E731
    for chunk in parsed_chunks(cells(), parse, sink, chunk_rows):
        score_rows(loaded, sink, chunk, write)


def jsonl_answer(manifest: Manifest, outcome: rowlib.Outcome) -> bytes:
    """One output line: the record's line number, then its answer."""
    return jsonio.dumps({"line": outcome.row.ref, **rowlib.answer(manifest, outcome)}) + b"\n"


def write_csv_answer(write: Any, outcome: rowlib.Outcome, header: list[str] | None) -> list[str]:
    """One output row (``line`` then each output's cells), preceded by the header when none is written
    yet; returns the header."""
    assert outcome.results is not None
    flat: dict[str, Any] = {}
    for name in outcome.row.outputs:
        values = outcome.results[name][0]
        if np.ndim(values) == 0:
            flat[name] = _cell(values)
        else:
            for i, value in enumerate(np.ravel(values)):
                flat[f"{name}_{i}"] = _cell(value)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header is None:
        header = ["line", *flat]
        writer.writerow(header)
    writer.writerow([outcome.row.ref, *flat.values()])
    write(buffer.getvalue().encode())
    return header


def csv_record(text: str, strict: bool = True) -> list[str]:
    """The cells of one line; a line the csv module rejects (a stray carriage return, a field over its
    size limit) fails as a record, or with ``strict=False`` reads as no cells."""
    try:
        return next(csv.reader([text]), [])
    except csv.Error as exc:
        if not strict:
            return []
        raise InvalidInput(f"line is not a CSV record: {exc}; expected numbers separated by commas") from exc


def numeric(record: list[str]) -> bool:
    try:
        [float(cell) for cell in record]
    except ValueError:
        return False
    return True


def _cell(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else np.asarray(value).item()

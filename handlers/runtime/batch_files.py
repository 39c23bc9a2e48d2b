"""Scoring one S3 file from ``inbox/<model>/`` into ``outbox/<model>/``, streamed and micro-batched.

JSON Lines (``.jsonl``, ``.ndjson``, ``.json``), CSV (``.csv``, single-input tabular models), and
``.npy`` / ``.npz`` tensors (answered as ``.npz``). A record that fails its checks goes to
``<name>.errors.jsonl`` with its line number and message; the others are scored. The summary goes to
``<name>.summary.json``; the output is written last and only whole, so an output that exists is
complete. A repeated notification for the same object version finds the output and does nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from handlers.runtime import jsonio
from handlers.runtime import rows as rowlib
from handlers.runtime.codecs.tensors import check_shape
from handlers.runtime.datatypes import OIP_TO_NUMPY
from handlers.runtime.errors import InvalidInput, OnnxfnError, quote
from handlers.runtime.model_store import LoadedModel, ModelStore
from handlers.runtime.observability import MetricUnit, logger, metrics
from handlers.runtime.s3_io import ObjectWriter, head, iter_lines
from handlers.runtime.settings import DataSettings

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".npy": "npy", ".npz": "npz"}
SOURCE_VERSION = "onnxfn-source-version"
ROWS_PER_GB = 8192  # rows held per chunk for each GB of function memory
MAX_NPZ_BYTES = 512 * 1024 * 1024


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


class _Sink:
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


def _chunk_rows(data: DataSettings, loaded: LoadedModel | None = None) -> int:
    """Rows held per chunk: scaled to memory, and no more elements than the manifest allows a request."""
    rows = max(64, ROWS_PER_GB * data.memory_mb // 1024)
    if loaded is not None:
        per_row = max(1, sum(int(np.prod([d for d in t.shape[1:] if d > 0] or [1])) for t in loaded.manifest.inputs))
        rows = min(rows, max(loaded.manifest.limits.max_batch, loaded.manifest.limits.max_elements // per_row))
    return max(1, rows)


def _file_failed(sink: _Sink, message: str) -> None:
    """The whole file is rejected: one failure record, no output, counts kept honest."""
    # Records read so far all count as failed: without an output, none of them was delivered.
    sink.summary.records_in = max(sink.summary.records_in, 1)
    sink.summary.scored = 0
    sink.summary.failed = sink.summary.records_in
    sink.errors.write(jsonio.dumps({"line": 0, "error": message}) + b"\n")
    sink.summary.output_key = None


def process_object(
    s3: Any, data: DataSettings, store: ModelStore, bucket: str, key: str, version_id: str | None, etag: str | None
) -> FileSummary:
    """Score ``s3://bucket/key`` (that version) unless its output already exists for that version."""
    name = key[len(data.inbox_prefix) :]
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    fmt = FORMATS.get(suffix, "unsupported")
    output_name = name[: -len(suffix)] + ".npz" if fmt == "npy" else name
    source_version = version_id or (etag or "").strip('"') or "unversioned"
    summary = FileSummary(
        source_bucket=bucket,
        source_key=key,
        source_version=source_version,
        format=fmt,
        output_key=f"{data.outbox_prefix}{output_name}",
        errors_key=f"{data.outbox_prefix}{name}.errors.jsonl",
    )
    existing = head(s3, data.bucket, summary.output_key or "")
    if existing and existing.get("Metadata", {}).get(SOURCE_VERSION) == source_version:
        logger.info("duplicate notification; output exists", extra={"key": key, "version": source_version})
        summary.duplicate = True
        return summary
    started = time.perf_counter()
    manifest = store.manifest()
    summary.model, summary.model_version = manifest.name, manifest.version
    metadata = {SOURCE_VERSION: source_version, "onnxfn-model-version": manifest.version}
    sink = _Sink(s3, data.bucket, summary, metadata)
    try:
        if fmt == "unsupported":
            sink.fail(0, f"unsupported file type {suffix or '(none)'!r}; expected one of {', '.join(FORMATS)}")
            summary.records_in = 1
        else:
            loaded = store.get_model()
            params = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
            body = s3.get_object(**params)["Body"]
            handlers = {"jsonl": _jsonl, "csv": _csv, "npy": _npy, "npz": _npz}
            try:
                handlers[fmt](body, loaded, sink, _chunk_rows(data, loaded))
            except OnnxfnError as exc:
                _file_failed(sink, exc.message)
            except (ValueError, TypeError, OSError, EOFError, AttributeError, KeyError, zipfile.BadZipFile) as exc:
                # A malformed file is the sender's problem: report it, don't retry it into the DLQ.
                _file_failed(sink, f"the file could not be read as {fmt}: {type(exc).__name__}: {str(exc)[:200]}")
        summary.milliseconds = round((time.perf_counter() - started) * 1000, 1)
        _finish(s3, data, sink)
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


def _finish(s3: Any, data: DataSettings, sink: _Sink) -> None:
    """Errors file, then summary, then the output last: an output that exists is complete."""
    summary = sink.summary
    if summary.failed:
        sink.errors.commit()
    else:
        s3.delete_object(Bucket=data.bucket, Key=summary.errors_key)  # a stale one from an older version
        summary.errors_key = None
    if summary.format == "unsupported":
        summary.output_key = None
    key = f"{data.outbox_prefix}{summary.source_key[len(data.inbox_prefix) :]}.summary.json"
    s3.put_object(
        Bucket=data.bucket, Key=key, Body=json.dumps(asdict(summary), indent=2).encode(), ContentType="application/json"
    )
    if summary.output_key is not None:
        sink.output.commit()
    else:
        sink.output.abort()


# --- formats -----------------------------------------------------------------------------------


def _score_rows(loaded: LoadedModel, sink: _Sink, pending: list[rowlib.Row], write: Any) -> None:
    for outcome in rowlib.score(loaded, pending):
        if outcome.error is not None:
            sink.fail(outcome.row.ref, outcome.error)
        else:
            sink.summary.scored += 1
            write(outcome)


def _parsed(lines: Iterator[tuple[int, Any]], parse: Any, sink: _Sink, chunk_rows: int) -> Iterator[list[rowlib.Row]]:
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


def _jsonl(body: Any, loaded: LoadedModel, sink: _Sink, chunk_rows: int) -> None:
    manifest = loaded.manifest

    def write(outcome: rowlib.Outcome) -> None:
        line = {"line": outcome.row.ref, **rowlib.answer(manifest, outcome)}
        sink.output.write(jsonio.dumps(line) + b"\n")

    numbered = ((n, line) for n, line in enumerate(iter_lines(body), start=1) if line.strip())
    for chunk in _parsed(numbered, lambda n, line: rowlib.row_from_line(n, line, manifest), sink, chunk_rows):
        _score_rows(loaded, sink, chunk, write)


def _csv(body: Any, loaded: LoadedModel, sink: _Sink, chunk_rows: int) -> None:
    manifest = loaded.manifest
    if len(manifest.inputs) != 1 or manifest.inputs[0].datatype == "BYTES":
        raise InvalidInput("CSV files are for single-input tabular models; use JSON Lines")

    def cells() -> Iterator[tuple[int, str]]:
        for number, line in enumerate(iter_lines(body), start=1):
            if not line.strip():
                continue
            text = line.decode("utf-8", "replace")
            if number == 1 and not _numeric(_csv_record(text, strict=False)):
                continue  # a header line
            yield number, text

    def write(outcome: rowlib.Outcome) -> None:
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
        if sink.csv_header is None:
            sink.csv_header = ["line", *flat]
            writer.writerow(sink.csv_header)
        writer.writerow([outcome.row.ref, *flat.values()])
        sink.output.write(buffer.getvalue().encode())

    parse = lambda n, text: rowlib.row_from_csv(n, _csv_record(text), manifest)  # noqa: E731
    for chunk in _parsed(cells(), parse, sink, chunk_rows):
        _score_rows(loaded, sink, chunk, write)


def _csv_record(text: str, strict: bool = True) -> list[str]:
    """The cells of one line; a line the csv module rejects (a stray carriage return, a field over its
    size limit) fails as a record, or with ``strict=False`` reads as no cells."""
    try:
        return next(csv.reader([text]), [])
    except csv.Error as exc:
        if not strict:
            return []
        raise InvalidInput(f"line is not a CSV record: {exc}; expected numbers separated by commas") from exc


def _numeric(record: list[str]) -> bool:
    try:
        [float(cell) for cell in record]
    except ValueError:
        return False
    return True


def _cell(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else np.asarray(value).item()


def _npy(body: Any, loaded: LoadedModel, sink: _Sink, chunk_rows: int) -> None:
    manifest = loaded.manifest
    if len(manifest.inputs) != 1:
        raise InvalidInput(f"a .npy file holds one array; this model has inputs {[t.name for t in manifest.inputs]}")
    spec = manifest.inputs[0]
    version = np.lib.format.read_magic(body)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(body)
    problem = _array_problem(spec, shape, dtype, fortran)
    # Python integers: np.prod wraps around on a huge claimed shape, and numpy accepts negative dimensions.
    claimed = dtype.itemsize * math.prod(shape) if shape else 0
    if problem is None and any(d < 0 for d in shape):
        problem = f"the header claims shape {list(shape)}; expected non-negative dimensions"
    if problem is None and (not shape or claimed > content_length(body)):
        problem = f"the header claims {list(shape)} {dtype} ({claimed} bytes) but the file is smaller"
    if problem:
        _file_failed(sink, problem)  # one record for the file: its header's row count is not trusted
        return
    row_bytes = dtype.itemsize * int(np.prod(shape[1:]))
    collected: dict[str, list[np.ndarray]] = {t.name: [] for t in manifest.outputs}
    remaining = int(shape[0])
    offset = 0
    while remaining:
        count = min(chunk_rows, remaining)
        raw = body.read(count * row_bytes)
        array = np.frombuffer(raw, dtype=dtype).reshape((count, *shape[1:]))
        sink.summary.records_in += count
        row = rowlib.Row(
            offset, {spec.name: array.astype(OIP_TO_NUMPY[spec.datatype], copy=False)}, outputs=list(collected)
        )
        for outcome in rowlib.score(loaded, [row]):
            if outcome.error is not None:
                for i in range(count):
                    sink.fail(offset + i, outcome.error)
            else:
                assert outcome.results is not None
                sink.summary.scored += count
                for name in collected:
                    collected[name].append(outcome.results[name])
        remaining -= count
        offset += count
    _write_npz(sink, collected)


def _npz(body: Any, loaded: LoadedModel, sink: _Sink, chunk_rows: int) -> None:
    manifest = loaded.manifest
    raw = body.read(MAX_NPZ_BYTES + 1)
    if len(raw) > MAX_NPZ_BYTES:
        raise InvalidInput(f".npz files are read whole and must stay under {MAX_NPZ_BYTES} bytes; use .npy")
    try:
        arrays = _npz_arrays(raw)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        _file_failed(sink, f"not a readable .npz archive without pickled objects: {exc}")
        return
    if any(a.ndim == 0 for a in arrays.values()):
        _file_failed(sink, "every array in the archive needs a leading row dimension")
        return
    expected = [t.name for t in manifest.inputs]
    rows = {len(a) for a in arrays.values()} if arrays else {0}
    problem = None
    if sorted(arrays) != sorted(expected):
        problem = f"the archive holds {sorted(arrays)}, expected arrays named {expected}"
    elif len(rows) != 1:
        problem = f"arrays disagree on the number of rows: {sorted(rows)}"
    else:
        for spec in manifest.inputs:
            problem = problem or _array_problem(spec, arrays[spec.name].shape, arrays[spec.name].dtype, False)
    total = rows.pop() if len(rows) == 1 else max(rows)
    if problem:
        _file_failed(sink, problem)
        return
    collected: dict[str, list[np.ndarray]] = {t.name: [] for t in manifest.outputs}
    for start in range(0, total, chunk_rows):
        count = min(chunk_rows, total - start)
        row = rowlib.Row(start, {n: a[start : start + count] for n, a in arrays.items()}, outputs=list(collected))
        sink.summary.records_in += count
        (outcome,) = rowlib.score(loaded, [row])
        if outcome.error is not None:
            for i in range(count):
                sink.fail(start + i, outcome.error)
            continue
        assert outcome.results is not None
        sink.summary.scored += count
        for name in collected:
            collected[name].append(outcome.results[name])
    _write_npz(sink, collected)


def _npz_arrays(raw: bytes) -> dict[str, np.ndarray]:
    """The archive's arrays; sizes checked before anything is inflated or allocated.

    Compressed members inflate to at most the size their zip entry declares (zipfile stops there), so
    the declared sizes bound memory; an array header claiming more than its member holds is refused
    before numpy allocates the array it describes.
    """
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        members = archive.infolist()
        inflated = sum(m.file_size for m in members)
        if inflated > MAX_NPZ_BYTES:
            raise InvalidInput(f"the archive inflates to {inflated} bytes, over the limit of {MAX_NPZ_BYTES}; use .npy")
        for member in members:
            if not member.filename.endswith(".npy"):
                raise InvalidInput(f"archive member {quote(member.filename)} is not an .npy array")
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(stream)
            claimed = dtype.itemsize * math.prod(shape)
            if any(d < 0 for d in shape) or claimed > member.file_size:
                raise InvalidInput(
                    f"array {quote(member.filename)} claims shape {list(shape)} {dtype} ({claimed} bytes) "
                    f"but its member holds {member.file_size} bytes"
                )
            with archive.open(member) as stream:
                arrays[member.filename[: -len(".npy")]] = np.lib.format.read_array(stream, allow_pickle=False)
    return arrays


def content_length(body: Any) -> int:
    """Bytes the streaming body will deliver (botocore's StreamingBody knows it)."""
    length = getattr(body, "_content_length", None)
    return int(length) if length is not None else 1 << 62


def _array_problem(spec: Any, shape: tuple[int, ...], dtype: np.dtype, fortran: bool) -> str | None:
    if fortran:
        return "array is in Fortran order; save it in C order"
    if spec.datatype == "BYTES" or dtype != OIP_TO_NUMPY[spec.datatype]:
        return f'input "{spec.name}": expected {spec.datatype} ({OIP_TO_NUMPY[spec.datatype]}), got {dtype}'
    try:
        check_shape(spec, [1, *list(shape[1:])] if shape else [])
    except InvalidInput as exc:
        return f"{exc.message} (file shape {list(shape)})"
    return None


def _text_array(array: np.ndarray) -> np.ndarray:
    items = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
    return np.array(items, dtype=str).reshape(array.shape)


def _write_npz(sink: _Sink, collected: dict[str, list[np.ndarray]]) -> None:
    buffer = io.BytesIO()
    arrays = {name: np.concatenate(parts) if parts else np.empty((0,)) for name, parts in collected.items()}
    arrays = {name: _text_array(a) if a.dtype == object else a for name, a in arrays.items()}
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    sink.output.write(buffer.getvalue())

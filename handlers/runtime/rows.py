"""Rows from files and messages, checked one by one, scored together.

A row is one input record (a JSON line, a CSV line, a slice of an array, a queue message) turned into
checked input arrays with a leading batch dimension. Rows whose non-batch shapes agree are stacked
and scored in one ``session.run`` (micro-batching); each row gets its own slice of the outputs back,
or its own error. A bad row never takes its neighbours down with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract.manifest import Manifest
from handlers.runtime import jsonio
from handlers.runtime.codecs import oip, v1
from handlers.runtime.codecs.tensors import array_from_json, check_finite, check_limits, check_shape
from handlers.runtime.errors import InvalidInput, OnnxfnError
from handlers.runtime.model_store import LoadedModel


@dataclass
class Row:
    """One record: where it came from, its checked inputs, and how its answer is written."""

    ref: int | str  # line number or message id
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    kind: str = "row"  # "oip" (answer as an OIP response), "v1" (predictions), "row" (outputs by name)
    request_id: str | None = None
    outputs: list[str] = field(default_factory=list)
    binary_outputs: set[str] = field(default_factory=set)
    v1_format: str = "instances"

    @property
    def batch(self) -> int:
        """Rows on axis 0 of the first input (1 for a scalar): what stacking counts in a batch-first model."""
        first = next(iter(self.inputs.values()))
        return int(first.shape[0]) if first.ndim else 1

    def signature(self) -> tuple[Any, ...]:
        return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(self.inputs.items()))


@dataclass
class Outcome:
    row: Row
    results: dict[str, np.ndarray] | None = None
    error: str | None = None
    retry: bool = False  # the error may pass (a fault, not the record): the queue should deliver it again


def failed(row: Row, exc: BaseException) -> Outcome:
    """The outcome of a row that raised ``exc``: a client's error is final, anything else may pass."""
    if isinstance(exc, OnnxfnError):
        return Outcome(row, error=exc.message, retry=exc.status_code >= 500)
    return Outcome(row, error=f"could not be scored: {type(exc).__name__}", retry=True)


def _is_text_model(manifest: Manifest) -> bool:
    return len(manifest.inputs) == 1 and manifest.inputs[0].datatype == "BYTES"


def row_from_document(ref: int | str, document: Any, manifest: Manifest, raw: bytes | None = None) -> Row:
    """A JSON record: an OIP infer request, a V1 request or instance, a bare input object, or a string."""
    outputs = [t.name for t in manifest.outputs]
    if (
        isinstance(document, Mapping)
        and "inputs" in document
        and isinstance(document["inputs"], list)
        and all(isinstance(t, Mapping) and "datatype" in t for t in document["inputs"])
    ):
        request = oip.decode_infer_request(raw or jsonio.dumps(document), None, manifest)
        return Row(ref, request.inputs, "oip", request.id, request.outputs, request.binary_outputs)
    if isinstance(document, Mapping) and ("instances" in document or "inputs" in document):
        fmt, arrays = v1.decode_predict_document(document, manifest)
        return Row(ref, arrays, "v1", None, outputs, v1_format=fmt)
    _, arrays = v1.decode_predict_document({"instances": [document]}, manifest)
    return Row(ref, arrays, "row", None, outputs)


def row_from_line(line_number: int, line: bytes, manifest: Manifest) -> Row:
    """One JSON Lines record; for a text model a line that is not JSON is the text itself."""
    text = line.strip()
    try:
        document = jsonio.loads(text)
    except (jsonio.JSONDecodeError, UnicodeDecodeError) as exc:
        if _is_text_model(manifest):
            try:
                return row_from_document(line_number, text.decode("utf-8"), manifest)
            except UnicodeDecodeError as decode_error:
                raise InvalidInput("line is not UTF-8 text") from decode_error
        raise InvalidInput(f"line is not valid JSON: {exc}") from exc
    return row_from_document(line_number, document, manifest, text)


def row_from_csv(line_number: int, cells: Sequence[str], manifest: Manifest) -> Row:
    """One CSV record for a single-input tabular model: every cell a number."""
    spec = manifest.inputs[0]
    try:
        values = [float(cell) for cell in cells]
    except ValueError as exc:
        raise InvalidInput(f"expected {len(cells)} numbers, got {list(cells)[:8]}…: {exc}") from exc
    shape = check_shape(spec, [1, len(values)])
    check_limits({spec.name: shape}, manifest)
    array = check_finite(spec, array_from_json(spec, shape, values), manifest.limits)
    return Row(line_number, {spec.name: array}, "row", None, [t.name for t in manifest.outputs])


def score(loaded: LoadedModel, rows: Sequence[Row]) -> list[Outcome]:
    """Score rows, stacking compatible ones into batches of at most the manifest's ``rows_per_run``.

    Only a batch-first model's rows stack (their inputs and outputs all count rows on axis 0); any other
    model scores each row alone, its tensors whole."""
    manifest = loaded.manifest
    limit = manifest.rows_per_run
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        key = row.signature() if manifest.batch_first else (id(row),)
        groups.setdefault(key, []).append(row)
    outcomes: dict[int, Outcome] = {}
    for group in groups.values():
        for chunk in _chunks(group, limit):
            for row, outcome in zip(chunk, _score_chunk(loaded, chunk), strict=True):
                outcomes[id(row)] = outcome
    return [outcomes[id(row)] for row in rows]


def _chunks(rows: list[Row], limit: int) -> Iterable[list[Row]]:
    chunk: list[Row] = []
    size = 0
    for row in rows:
        if chunk and size + row.batch > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += row.batch
    if chunk:
        yield chunk


def _score_chunk(loaded: LoadedModel, rows: list[Row]) -> list[Outcome]:
    names = [t.name for t in loaded.manifest.outputs]
    if len(rows) == 1:
        stacked = rows[0].inputs
    else:
        stacked = {name: np.concatenate([row.inputs[name] for row in rows]) for name in rows[0].inputs}
    try:
        results = loaded.run(stacked, names)
    except Exception as exc:  # onnxruntime errors are plain Exceptions: the row fails, not the batch
        if len(rows) == 1:
            return [failed(rows[0], exc)]
        # One row made the graph reject the whole batch: score them one by one to find it.
        return [outcome for row in rows for outcome in _score_chunk(loaded, [row])]
    if len(rows) == 1:
        return [Outcome(rows[0], results={name: results[name] for name in names})]
    outcomes = []
    offset = 0
    for row in rows:
        sliced = {name: results[name][offset : offset + row.batch] for name in names}
        outcomes.append(Outcome(row, results=sliced))
        offset += row.batch
    return outcomes


def answer_json(manifest: Manifest, outcome: Outcome) -> bytes:
    """The answer as JSON bytes, encoded once (OIP answers come straight from the OIP encoder)."""
    if outcome.row.kind == "oip":
        assert outcome.results is not None
        row = outcome.row
        request = oip.InferRequest(id=row.request_id, inputs={}, outputs=row.outputs, binary_outputs=set())
        body, _ = oip.encode_infer_response(manifest, request, outcome.results)
        return body
    return jsonio.dumps(answer(manifest, outcome))


def answer(manifest: Manifest, outcome: Outcome) -> dict[str, Any]:
    """The JSON answer for one scored row, shaped like the request it came from."""
    row, results = outcome.row, outcome.results
    assert results is not None
    if row.kind == "oip":
        request = oip.InferRequest(id=row.request_id, inputs={}, outputs=row.outputs, binary_outputs=set())
        body, _ = oip.encode_infer_response(manifest, request, results)
        document: dict[str, Any] = jsonio.loads(body)
        return document
    if row.kind == "v1":
        return v1.encode_predict_response(row.v1_format, row.outputs, results)
    prediction = v1.encode_predict_response("instances", row.outputs, results)["predictions"][0]
    return prediction if isinstance(prediction, dict) else {row.outputs[0]: prediction}

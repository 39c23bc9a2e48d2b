"""Calibration sets for static quantization: rows from a file, checked and batched into feed dicts.

Three formats, chosen by suffix: ``.npy`` (one array ``[N, ...]`` for a single-input model),
``.jsonl`` (one JSON object per line mapping input names to one row, or one JSON string per line
for a text model) and anything else read as text lines (text models only). Every row is checked
against the model's input shapes and cast to the input's dtype here, so a bad file fails with a
message naming the input instead of somewhere inside onnxruntime's calibrator.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from onnxfn.errors import UserError

InputSpec = dict[str, tuple[np.dtype[Any], tuple[int, ...]]]
Feed = dict[str, np.ndarray]
Tokenize = Callable[[list[str]], dict[str, np.ndarray]]

SUPPORTED_FORMATS = (
    ".npy (one array [N, ...], single-input models), "
    ".jsonl (one JSON object per line mapping input names to a row, or a JSON string for text models), "
    "text lines (text models only)"
)


class CalibrationError(UserError, ValueError):
    """A calibration file cannot feed the model; the message says which input and what was expected."""


class CalibrationReader:
    """Feed dicts as onnxruntime's ``CalibrationDataReader``, which checks for ``get_next`` only.

    ``__len__`` and ``set_range`` let ``quantize_static`` take ranges a slice at a time
    (``CalibStridedMinMax``) instead of holding every calibrated tensor of every batch.
    """

    def __init__(self, feeds: list[Feed], input_names: list[str]) -> None:
        for index, feed in enumerate(feeds):
            missing = [name for name in input_names if name not in feed]
            if missing:
                raise CalibrationError(
                    f"calibration data: batch {index} lacks input {', '.join(map(repr, missing))}; "
                    f"the model needs {', '.join(input_names)}"
                )
        # Only the model's inputs: onnxruntime rejects a feed with names the model does not have.
        self._feeds = [{name: feed[name] for name in input_names} for feed in feeds]
        self._next = iter(self._feeds)

    def get_next(self) -> Feed | None:
        return next(self._next, None)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self._feeds[start_index:end_index])

    def rewind(self) -> None:
        self._next = iter(self._feeds)


def model_inputs(model_path: Path) -> InputSpec:
    """Read the input names, dtypes and shapes of an ONNX model, as ``load_calibration`` wants them.

    Parameters
    ----------
    model_path
        The ``.onnx`` file. Weights are not loaded.

    Returns
    -------
    dict
        Input name to ``(dtype, shape)``, with ``-1`` for every dimension that is symbolic or unset.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path), load_external_data=False)
    # Before IR 4 initializers were listed as inputs too; they are weights, not feeds.
    weights = {t.name for t in model.graph.initializer}
    spec: InputSpec = {}
    for value in model.graph.input:
        if value.name in weights:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        spec[value.name] = (np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims)
    return spec


def load_calibration(
    path: Path,
    inputs: InputSpec,
    *,
    tokenize: Tokenize | None = None,
    batch_size: int = 8,
    limit: int = 512,
) -> list[Feed]:
    """Load up to ``limit`` calibration rows from ``path`` as feed dicts of ``batch_size`` rows.

    Parameters
    ----------
    path
        ``.npy``, ``.jsonl`` or a text file (one sentence per line).
    inputs
        Model input name to ``(dtype, shape)``, ``-1`` for dynamic dimensions; the first
        dimension is the batch (see ``model_inputs``).
    tokenize
        For text models: turns a list of sentences into the model's input arrays (padded to the
        longest). Without it, only tensor formats are accepted.
    batch_size
        Rows per feed dict. A model whose batch dimension is fixed gets batches of that size.
    limit
        At most this many rows are read.

    Returns
    -------
    list of dict
        Feed dicts: model input name to an array with a batch dimension, in the input's dtype.

    Raises
    ------
    CalibrationError
        The file is missing, empty, in an unsupported format, or a row does not fit an input.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration data: {path} does not exist or is not a file")
    if not inputs:
        raise CalibrationError("calibration data: the model has no inputs to feed")
    if batch_size < 1 or limit < 1:
        raise CalibrationError(f"calibration data: batch_size and limit must be >= 1, got {batch_size} and {limit}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        feeds = _from_npy(path, inputs, batch_size, limit)
    elif suffix == ".jsonl":
        feeds = _from_jsonl(path, inputs, tokenize, batch_size, limit)
    elif tokenize is not None:
        feeds = _from_text(_text_lines(path, limit), inputs, tokenize, batch_size)
    else:
        raise CalibrationError(
            f"calibration data: {path.name}: {suffix or 'no suffix'} is text, which only a text model "
            f"(with a tokenizer) can use; supported formats: {SUPPORTED_FORMATS}"
        )
    if not feeds:
        raise CalibrationError(f"calibration data: {path.name} holds no rows")
    return feeds


def _from_npy(path: Path, inputs: InputSpec, batch_size: int, limit: int) -> list[Feed]:
    if len(inputs) != 1:
        raise CalibrationError(
            f"calibration data: a .npy file holds one array but the model has {len(inputs)} inputs "
            f"({', '.join(inputs)}); use .jsonl with one object per row"
        )
    ((name, (dtype, shape)),) = inputs.items()
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"calibration data: {path.name} is not a readable .npy array: {exc}") from exc
    if array.ndim == 0 or array.shape[0] == 0:
        raise CalibrationError(f"calibration data: {path.name} holds no rows (shape {list(array.shape)})")
    array = _fit(name, array[:limit], dtype, shape, where="")
    rows = _batch_size(shape, batch_size)
    return [{name: array[i : i + rows]} for i in range(0, _usable(len(array), shape, rows), rows)]


def _from_jsonl(path: Path, inputs: InputSpec, tokenize: Tokenize | None, batch_size: int, limit: int) -> list[Feed]:
    texts: list[str] = []
    rows: list[Feed] = []
    for number, line in _numbered_lines(path):
        if len(texts) + len(rows) >= limit:
            break
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"calibration data: {path.name} line {number}: not JSON ({exc.msg})") from exc
        if isinstance(value, str):
            if tokenize is None:
                raise CalibrationError(
                    f"calibration data: {path.name} line {number}: a text row, but the model has no tokenizer; "
                    f"expected an object with keys {', '.join(inputs)}"
                )
            texts.append(value)
        elif isinstance(value, dict):
            rows.append(_row(value, inputs, where=f"{path.name} line {number}: "))
        else:
            raise CalibrationError(
                f"calibration data: {path.name} line {number}: expected an object with keys {', '.join(inputs)}"
                f"{' or a string' if tokenize else ''}, got {type(value).__name__}"
            )
        if texts and rows:
            raise CalibrationError(f"calibration data: {path.name} line {number}: mixes text rows and tensor rows")
    if texts:
        assert tokenize is not None  # only appended when a tokenizer is given
        return _from_text(texts, inputs, tokenize, batch_size)
    return _stack(rows, inputs, batch_size)


def _row(value: dict[str, Any], inputs: InputSpec, where: str) -> Feed:
    missing = [name for name in inputs if name not in value]
    unknown = [name for name in value if name not in inputs]
    if missing or unknown:
        raise CalibrationError(
            f"calibration data: {where}expected keys {', '.join(inputs)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )
    row: Feed = {}
    for name, (dtype, shape) in inputs.items():
        try:
            array = np.asarray(value[name])
        except ValueError as exc:  # ragged nested lists
            raise CalibrationError(f"calibration data: {where}input {name!r} is not a rectangular array") from exc
        row[name] = _fit(name, array[None, ...], dtype, shape, where=where)
    return row


def _stack(rows: list[Feed], inputs: InputSpec, batch_size: int) -> list[Feed]:
    """Concatenate rows into batches; rows whose dynamic dimensions differ go to separate batches."""
    first_shape = next(iter(inputs.values()))[1]
    size = _batch_size(first_shape, batch_size)
    fixed = first_shape[0] > 0
    feeds: list[Feed] = []
    pending: list[Feed] = []

    def flush() -> None:
        # A fixed batch dimension takes only full batches.
        if pending and (len(pending) == size or not fixed):
            feeds.append({name: np.concatenate([r[name] for r in pending]) for name in inputs})
        pending.clear()

    for row in rows:
        if pending and any(row[n].shape != pending[0][n].shape for n in inputs):
            flush()
        pending.append(row)
        if len(pending) == size:
            flush()
    flush()
    return feeds


def _from_text(texts: Iterable[str], inputs: InputSpec, tokenize: Tokenize, batch_size: int) -> list[Feed]:
    sentences = list(texts)
    feeds: list[Feed] = []
    for start in range(0, len(sentences), batch_size):
        encoded = tokenize(sentences[start : start + batch_size])
        missing = [name for name in inputs if name not in encoded]
        if missing:
            raise CalibrationError(
                f"calibration data: the tokenizer gives {', '.join(encoded)} but the model also needs "
                f"{', '.join(missing)}"
            )
        # Tokenizers often return more than the model takes (token_type_ids); feed only its inputs.
        feeds.append(
            {
                name: _fit(name, np.asarray(encoded[name]), dtype, shape, where="tokenizer output: ")
                for name, (dtype, shape) in inputs.items()
            }
        )
    return feeds


def _fit(name: str, array: np.ndarray, dtype: np.dtype[Any], shape: tuple[int, ...], where: str) -> np.ndarray:
    """Check ``array`` (batch first) against the input's fixed dimensions and cast it to its dtype."""
    expected = [-1, *shape[1:]] if shape else []
    fits = array.ndim == len(shape) and all(d < 0 or d == a for d, a in zip(shape[1:], array.shape[1:], strict=True))
    if not fits:
        raise CalibrationError(
            f"calibration data: {where}expected shape {expected} for input {name!r}, got {list(array.shape)}"
        )
    target = np.dtype(dtype)
    if array.dtype.kind not in "biuf":
        raise CalibrationError(f"calibration data: {where}input {name!r} expects {target}, got {array.dtype} values")
    if target.kind in "biu" and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise CalibrationError(f"calibration data: {where}input {name!r} expects {target}, got non-integer values")
    return np.ascontiguousarray(array, dtype=target)


def _batch_size(shape: tuple[int, ...], requested: int) -> int:
    # A model exported with a fixed batch (often 1) accepts nothing else.
    return shape[0] if shape and shape[0] > 0 else requested


def _usable(count: int, shape: tuple[int, ...], rows: int) -> int:
    """Rows that fill whole batches when the batch dimension is fixed; all rows otherwise."""
    return count - count % rows if shape and shape[0] > 0 else count


def _numbered_lines(path: Path) -> Iterable[tuple[int, str]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield number, line


def _text_lines(path: Path, limit: int) -> list[str]:
    texts: list[str] = []
    for _, line in _numbered_lines(path):
        texts.append(line.strip())
        if len(texts) >= limit:
            break
    return texts

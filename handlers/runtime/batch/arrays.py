"""``.npy`` and ``.npz`` batch files: arrays checked against the manifest before they are read,
answered as ``.npz``."""

from __future__ import annotations

import io
import math
import zipfile
from typing import Any

import numpy as np

from contract.quoting import quote
from handlers.runtime import rows as rowlib
from handlers.runtime.batch.sink import Sink, file_failed
from handlers.runtime.codecs.tensors import check_shape
from handlers.runtime.datatypes import OIP_TO_NUMPY
from handlers.runtime.errors import InvalidInput
from handlers.runtime.model_store import LoadedModel

MAX_NPZ_BYTES = 512 * 1024 * 1024


def read_npy(body: Any, loaded: LoadedModel, sink: Sink, chunk_rows: int) -> None:
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
        file_failed(sink, problem)  # one record for the file: its header's row count is not trusted
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


def read_npz(body: Any, loaded: LoadedModel, sink: Sink, chunk_rows: int) -> None:
    manifest = loaded.manifest
    raw = body.read(MAX_NPZ_BYTES + 1)
    if len(raw) > MAX_NPZ_BYTES:
        raise InvalidInput(f".npz files are read whole and must stay under {MAX_NPZ_BYTES} bytes; use .npy")
    try:
        arrays = _npz_arrays(raw)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        file_failed(sink, f"not a readable .npz archive without pickled objects: {exc}")
        return
    if any(a.ndim == 0 for a in arrays.values()):
        file_failed(sink, "every array in the archive needs a leading row dimension")
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
        file_failed(sink, problem)
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


def _write_npz(sink: Sink, collected: dict[str, list[np.ndarray]]) -> None:
    buffer = io.BytesIO()
    arrays = {name: np.concatenate(parts) if parts else np.empty((0,)) for name, parts in collected.items()}
    arrays = {name: _text_array(a) if a.dtype == object else a for name, a in arrays.items()}
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    sink.output.write(buffer.getvalue())

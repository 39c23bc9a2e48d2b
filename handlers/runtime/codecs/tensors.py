"""Checks and conversions of one tensor against its manifest spec, before anything large is allocated.

Messages say what was wrong and what was expected, e.g.
``input "pixels": expected FP32 shape [-1, 64], got shape [2, 63]``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from contract.manifest import Limits, Manifest, TensorSpec
from contract.quoting import quote
from handlers.runtime.datatypes import OIP_TO_NUMPY, itemsize
from handlers.runtime.errors import InvalidInput, PayloadTooLarge

# numpy kinds a JSON array may hold for each target datatype family
_INT_KINDS = ("i", "u")
_FLOAT_KINDS = ("i", "u", "f")
_KIND_NAMES = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats", "U": "strings", "O": "mixed values"}
_TYPE_NAMES = {bool: "booleans", int: "integers", float: "floats", str: "strings"}


def describe(spec: TensorSpec) -> str:
    return f"{spec.datatype} shape {list(spec.shape)}"


def check_shape(spec: TensorSpec, shape: Any, what: str = "input") -> tuple[int, ...]:
    """The request's shape as a tuple, if it fits the spec (-1 matches any positive size)."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidInput(f'{what} "{spec.name}": "shape" must be a list of integers, got {quote(shape)}')
    fits = len(shape) == len(spec.shape) and all(e in (-1, d) for d, e in zip(shape, spec.shape, strict=True))
    if not fits:
        raise InvalidInput(f'{what} "{spec.name}": expected {describe(spec)}, got shape {shape}')
    if any(d <= 0 for d in shape):
        raise InvalidInput(f'{what} "{spec.name}": every dimension must be at least 1, got shape {shape}')
    return tuple(shape)


def check_limits(shapes: dict[str, tuple[int, ...]], manifest: Manifest) -> None:
    """Reject a request whose batch or element count is over the manifest's limits, or whose inputs
    disagree on how many rows they hold (each counted on its own batch axis)."""
    limits = manifest.limits
    batches: dict[str, int] = {}
    for name, shape in shapes.items():
        spec = manifest.input(name)
        rows = spec.batch_of(shape) if spec is not None else (shape[0] if shape else None)
        if rows is None:
            continue
        if rows > limits.max_batch:
            raise PayloadTooLarge(
                f'input "{name}": batch of {rows} is over the limit of {limits.max_batch} per request; '
                "split the request"
            )
        batches[name] = rows
    if len(set(batches.values())) > 1:
        counts = ", ".join(f'"{name}" {rows}' for name, rows in batches.items())
        raise InvalidInput(f"the inputs hold different numbers of rows ({counts}); expected the same batch in each")
    total = sum(math.prod(shape) for shape in shapes.values())
    if total > limits.max_elements:
        raise PayloadTooLarge(
            f"request holds {total} elements, over the limit of {limits.max_elements}; split the request"
        )


def check_finite(spec: TensorSpec, array: np.ndarray, limits: Limits, what: str = "input") -> np.ndarray:
    """``array``, unless it holds inf or NaN where the model does not ask for them."""
    if array.dtype.kind == "f" and not limits.allow_non_finite and array.size and not np.isfinite(array).all():
        raise InvalidInput(
            f'{what} "{spec.name}": holds inf or NaN (a value out of {spec.datatype}\'s range, such as 1e300, '
            f"becomes inf); expected finite {spec.datatype} values"
        )
    return array


def _leaves(label: str, shape: tuple[int, ...], data: list[Any]) -> list[Any]:
    """The elements of ``data``, flat or nested exactly as ``shape``, in row-major order.

    Checked level by level without numpy: ``np.array`` on client data would size every string to the
    longest one (4 bytes a character), so one long string among a batch of values allocates gigabytes.
    """
    count = math.prod(shape)
    if list not in set(map(type, data)):
        if len(data) != count:
            raise InvalidInput(
                f"{label}: data holds {len(data)} elements in shape [{len(data)}], "
                f"expected {count} elements for shape {list(shape)}"
            )
        return data
    level: list[Any] = [data]
    for dim in shape:
        nested: list[Any] = []
        for item in level:
            if not isinstance(item, list) or len(item) != dim:
                raise InvalidInput(
                    f"{label}: data is ragged or not nested as shape {list(shape)}; "
                    f"expected {count} values, flat or nested as the shape"
                )
            nested.extend(item)
        level = nested
    return level


def _kind_of(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), "mixed values")


def array_from_json(spec: TensorSpec, shape: tuple[int, ...], data: Any, what: str = "input") -> np.ndarray:
    """A numpy array from JSON ``data`` (nested or flat), checked for kind, range and element count."""
    label = f'{what} "{spec.name}"'
    leaves = _leaves(label, shape, data if isinstance(data, list) else [data])
    types = set(map(type, leaves))
    if list in types:
        raise InvalidInput(f"{label}: data nests deeper than shape {list(shape)}; expected {describe(spec)}")
    if spec.datatype == "BYTES":
        if not types <= {str, bytes}:  # bytes: a V1 {"b64": ...} of binary content
            wrong = next(v for v in leaves if not isinstance(v, str | bytes))
            raise InvalidInput(f"{label}: expected strings for BYTES, got {_kind_of(wrong)}")
        out = np.empty(len(leaves), dtype=object)
        try:
            out[:] = [s if isinstance(s, bytes) else s.encode("utf-8") for s in leaves]
        except UnicodeEncodeError as exc:
            raise InvalidInput(f"{label}: expected UTF-8 text, got a lone surrogate") from exc
        return out.reshape(shape)
    if str in types:
        raise InvalidInput(f"{label}: expected {spec.datatype} values, got strings")
    try:
        raw = np.array(leaves)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"{label}: data is not all of one kind; expected {describe(spec)}") from exc
    kind = raw.dtype.kind
    target = OIP_TO_NUMPY[spec.datatype]
    if spec.datatype == "BOOL":
        allowed: Sequence[str] = ("b",)
    elif target.kind in _INT_KINDS:
        allowed = _INT_KINDS
    else:
        allowed = _FLOAT_KINDS
    if kind not in allowed:
        raise InvalidInput(f"{label}: expected {spec.datatype} values, got {_KIND_NAMES.get(kind, kind)}")
    if target.kind in _INT_KINDS and raw.size:
        info = np.iinfo(target)
        low, high = int(raw.min()), int(raw.max())
        if low < info.min or high > info.max:
            raise InvalidInput(f"{label}: values must lie in [{info.min}, {info.max}] for {spec.datatype}")
    with np.errstate(over="ignore", invalid="ignore"):  # out of range becomes inf, which check_finite refuses
        return raw.astype(target, copy=False).reshape(shape)


def array_from_bytes(spec: TensorSpec, shape: tuple[int, ...], raw: memoryview, what: str = "input") -> np.ndarray:
    """A numpy array over a binary tensor section (little-endian, row-major; BYTES length-prefixed)."""
    label = f'{what} "{spec.name}"'
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        items = deserialize_bytes(raw, label, limit=count)
        if len(items) != count:
            held = f"more than {count}" if len(items) > count else str(len(items))
            raise InvalidInput(f"{label}: binary data holds {held} strings, expected {count} for shape {list(shape)}")
        out = np.empty(count, dtype=object)
        out[:] = items
        return out.reshape(shape)
    expected = count * itemsize(spec.datatype)
    if len(raw) != expected:
        raise InvalidInput(
            f"{label}: binary_data_size is {len(raw)} bytes, expected {expected} "
            f"({count} × {itemsize(spec.datatype)}-byte {spec.datatype})"
        )
    return np.frombuffer(raw, dtype=OIP_TO_NUMPY[spec.datatype].newbyteorder("<")).reshape(shape)


def deserialize_bytes(raw: memoryview, label: str, limit: int | None = None) -> list[bytes]:
    """Elements of a BYTES tensor in the binary extension: each a 4-byte little-endian length, then bytes.

    With ``limit``, parsing stops one element past it, so a body of empty elements cannot make the
    handler build millions of objects before the count is checked.
    """
    items: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end and (limit is None or len(items) <= limit):
        if offset + 4 > end:
            raise InvalidInput(f"{label}: binary BYTES data ends inside a 4-byte length prefix at offset {offset}")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(f"{label}: binary BYTES element of {length} bytes runs past the end of its data")
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    return items


def serialize_bytes(items: Iterable[Any]) -> bytes:
    """The binary-extension form of a BYTES tensor."""
    parts: list[bytes] = []
    for item in items:
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def to_json_data(array: np.ndarray, datatype: str) -> list[Any] | np.ndarray:
    """Row-major flat data for an OIP JSON response: text for BYTES, else a contiguous array."""
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat.tolist()]
    return np.ascontiguousarray(flat, dtype=OIP_TO_NUMPY[datatype])


def to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return serialize_bytes(array.reshape(-1).tolist())
    return np.ascontiguousarray(array, dtype=OIP_TO_NUMPY[datatype].newbyteorder("<")).tobytes()

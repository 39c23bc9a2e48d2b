from __future__ import annotations

import numpy as np
import pytest

from contract.manifest import TensorSpec
from handlers.runtime import jsonio
from handlers.runtime.codecs.tensors import (
    array_from_bytes,
    array_from_json,
    check_limits,
    check_shape,
    deserialize_bytes,
    serialize_bytes,
    to_binary,
    to_json_data,
)
from handlers.runtime.datatypes import OIP_TO_NUMPY, numpy_to_oip
from handlers.runtime.errors import InvalidInput, PayloadTooLarge
from tests.unit.test_request_checks import _manifest

NUMERIC = [d for d in OIP_TO_NUMPY if d not in ("BYTES",)]


@pytest.mark.parametrize("datatype", NUMERIC)
def test_every_numeric_datatype_round_trips_json_and_binary(datatype):
    spec = TensorSpec(name="x", datatype=datatype, shape=(-1, 3))
    dtype = OIP_TO_NUMPY[datatype]
    values = np.array([[1, 0, 1], [0, 1, 1]]).astype(dtype)
    data = jsonio.loads(jsonio.dumps(to_json_data(values, datatype)))  # through real JSON
    from_json = array_from_json(spec, (2, 3), data)
    assert from_json.dtype == dtype and np.array_equal(from_json, values)
    from_binary = array_from_bytes(spec, (2, 3), memoryview(to_binary(values, datatype)))
    assert np.array_equal(from_binary, values)
    assert numpy_to_oip(dtype) == datatype


def test_bytes_tensor_round_trip():
    spec = TensorSpec(name="t", datatype="BYTES", shape=(-1,))
    items = [b"", b"hello", "naïve ✓".encode()]
    raw = serialize_bytes(items)
    assert deserialize_bytes(memoryview(raw), "t") == items
    array = array_from_bytes(spec, (3,), memoryview(raw))
    assert array.tolist() == items
    assert to_json_data(array, "BYTES") == ["", "hello", "naïve ✓"]


def test_nested_and_flat_json_agree():
    spec = TensorSpec(name="x", datatype="FP32", shape=(-1, 2))
    nested = array_from_json(spec, (2, 2), [[1, 2], [3, 4]])
    flat = array_from_json(spec, (2, 2), [1, 2, 3, 4])
    assert np.array_equal(nested, flat) and nested.dtype == np.float32


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("UINT8", [256], r"values must lie in \[0, 255\]"),
        ("INT8", [-129], r"values must lie in \[-128, 127\]"),
        ("INT32", [1.5], "expected INT32 values, got floats"),
        ("BOOL", [1], "expected BOOL values, got integers"),
        ("INT64", [10**30], "expected INT64 values, got mixed values"),
    ],
)
def test_json_values_are_checked(datatype, data, message):
    with pytest.raises(InvalidInput, match=message):
        array_from_json(TensorSpec(name="x", datatype=datatype, shape=(-1,)), (1,), data)


def test_shape_and_limits():
    spec = TensorSpec(name="x", datatype="FP32", shape=(-1, 4))
    assert check_shape(spec, [7, 4]) == (7, 4)
    with pytest.raises(InvalidInput, match=r"expected FP32 shape \[-1, 4\], got shape \[7, 5\]"):
        check_shape(spec, [7, 5])
    with pytest.raises(InvalidInput, match="must be a list of integers"):
        check_shape(spec, [7, True])
    with pytest.raises(PayloadTooLarge, match="batch of 9"):
        check_limits({"x": (9, 4)}, _manifest([spec], max_batch=8))
    with pytest.raises(PayloadTooLarge, match="36 elements"):
        check_limits({"x": (9, 4)}, _manifest([spec], max_batch=10, max_elements=35))

"""Hypothesis strategies for bad input: structured-but-wrong documents and raw bytes, and the check
every decoder must pass (a valid decode, or the project's own error with a 4xx status)."""

from __future__ import annotations

import contextlib
import json
import math
import struct
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from hypothesis import currently_in_test_context, event
from hypothesis import strategies as st

from contract.manifest import Manifest, TensorSpec
from handlers.runtime.datatypes import OIP_DATATYPES
from handlers.runtime.errors import OnnxfnError
from tests.conftest import artifact

T = TypeVar("T")
PYTHON_RECURSION_LIMIT = 1000

# --- the real demo manifests (no S3, no model) ----------------------------------------------------

DIGITS = Manifest.load(artifact("digits") / "manifest.json")
MINILM = Manifest.load(artifact("minilm") / "manifest.json")
MANIFESTS = {"digits": DIGITS, "minilm": MINILM}


@contextlib.contextmanager
def default_recursion_limit() -> Iterator[None]:
    """Python's default recursion limit, as in Lambda: hypothesis raises it by 2,000 while a test runs,
    which would hide a decoder recursing once per level of a deeply nested document."""
    raised = sys.getrecursionlimit()
    sys.setrecursionlimit(PYTHON_RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(raised)


def expect_decode_or_4xx(decode: Callable[[], T]) -> T | OnnxfnError:
    """Run a decoder: it returns, or raises an ``OnnxfnError`` with a 4xx status and a short message.

    Any other exception propagates and fails the test (hypothesis then shrinks the input).
    """
    try:
        with default_recursion_limit():
            result = decode()
    except OnnxfnError as error:
        count_outcome(f"rejected: {error.status_code}")
        assert 400 <= error.status_code < 500, (error.status_code, error.message)
        assert error.message.strip(), "an error must say what was wrong"
        assert len(error.message) <= OnnxfnError.MAX_MESSAGE
        assert "Traceback" not in error.message
        return error
    count_outcome("decoded")
    return result


def count_outcome(label: str) -> None:
    """Count outcomes in ``--hypothesis-show-statistics`` (outside a hypothesis test, do nothing)."""
    if currently_in_test_context():
        event(label)


# --- JSON values ----------------------------------------------------------------------------------

# Integers past 64 bits and non-finite floats: json.dumps writes them (orjson parses big integers as
# floats and refuses NaN and Infinity), so bodies built from these reach the parser as they would.
huge_ints = st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 2**64, 2**64 - 1, 10**30, -(10**30), 2**1000])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**66), max_value=2**66),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "pixels", "text", "FP32", "BYTES", "\u0000", "é", "😀", "\u202e", "🏳️‍🌈"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` wrapped in ``depth`` one-element lists (built without recursion)."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


deep_values = st.builds(nested, st.integers(min_value=1, max_value=1000), scalars)


def dumps(document: Any) -> bytes:
    """JSON text of any document hypothesis builds: big integers kept, NaN and Infinity as their tokens."""
    return json.dumps(document, allow_nan=True).encode("utf-8", "surrogatepass")


# --- tensors --------------------------------------------------------------------------------------


def _row_values(spec: TensorSpec) -> st.SearchStrategy[Any]:
    if spec.datatype == "BYTES":
        return st.text(max_size=30)
    if spec.datatype == "BOOL":
        return st.booleans()
    if spec.datatype.startswith(("INT", "UINT")):
        return st.integers(min_value=-(2**70), max_value=2**70)
    return st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(-(10**6), 10**6))


@st.composite
def valid_tensor(draw: st.DrawFn, spec: TensorSpec) -> dict[str, Any]:
    """A JSON tensor that fits ``spec`` (flat or nested data), before any mutation."""
    batch = draw(st.integers(min_value=1, max_value=3))
    shape = [batch if d == -1 else d for d in spec.shape]
    count = math.prod(shape)
    flat = draw(st.lists(_row_values(spec), min_size=count, max_size=count))
    data: list[Any] = flat
    if len(shape) == 2 and draw(st.booleans()):
        data = [flat[i * shape[1] : (i + 1) * shape[1]] for i in range(shape[0])]
    return {"name": spec.name, "datatype": spec.datatype, "shape": shape, "data": data}


wrong_names = st.one_of(st.sampled_from(["pixels", "text", "image", "PIXELS", ""]), json_values)
wrong_datatypes = st.one_of(st.sampled_from([*OIP_DATATYPES, "FP8", "float32", "fp32", "STRING"]), json_values)
wrong_shapes = st.one_of(
    st.lists(st.integers(min_value=-3, max_value=2**64), max_size=4),
    st.lists(st.sampled_from([0, -1, 1, 64, 65, 1024, 1025, 10**8, 2**62, 2**63 - 1]), min_size=1, max_size=3),
    deep_values,
    json_values,
)
wrong_data = st.one_of(
    st.lists(scalars, max_size=70),
    st.lists(st.lists(scalars, max_size=66), max_size=3),
    deep_values,
    json_values,
)
wrong_parameters = st.one_of(
    st.fixed_dictionaries({"binary_data_size": st.one_of(st.integers(-(2**64), 2**64), json_values)}),
    json_values,
)


@st.composite
def tensor_objects(draw: st.DrawFn, manifest: Manifest, spec: TensorSpec | None = None) -> Any:
    """A tensor object of the right form with zero, one or several fields made wrong, or any JSON value."""
    spec = spec or draw(st.sampled_from(manifest.inputs))
    tensor: Any = draw(valid_tensor(spec))
    mutations = {
        "name": wrong_names,
        "datatype": wrong_datatypes,
        "shape": wrong_shapes,
        "data": wrong_data,
        "parameters": wrong_parameters,
    }
    wrong = st.lists(st.sampled_from(sorted(mutations)), min_size=1, max_size=3, unique=True)
    for key in draw(st.one_of(st.just([]), wrong)):
        if draw(st.booleans()):
            tensor[key] = draw(mutations[key])
        else:
            tensor.pop(key, None)
    if draw(st.integers(0, 9)) == 0:
        tensor = draw(json_values)
    return tensor


@st.composite
def infer_documents(draw: st.DrawFn, manifest: Manifest) -> Any:
    """An OIP infer request: right keys with wrong values, extra or missing parts."""
    one_each = st.tuples(*(tensor_objects(manifest, spec) for spec in manifest.inputs)).map(list)
    inputs = draw(st.one_of(one_each, st.lists(tensor_objects(manifest), max_size=3), json_values))
    document: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        document["id"] = draw(st.one_of(st.text(max_size=10), st.text(max_size=10), json_values))
    if draw(st.booleans()):
        names = [t.name for t in manifest.outputs]
        flag = st.fixed_dictionaries({"binary_data": st.booleans()})
        outputs = st.fixed_dictionaries(
            {"name": st.one_of(st.sampled_from(names), st.sampled_from(names), json_values)},
            optional={"parameters": st.one_of(flag, flag, json_values)},
        )
        document["outputs"] = draw(st.one_of(st.lists(outputs, max_size=3), json_values))
    if draw(st.booleans()):
        flag = st.fixed_dictionaries({"binary_data_output": st.booleans()})
        document["parameters"] = draw(st.one_of(flag, flag, json_values))
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    return document


# --- the binary tensor extension ------------------------------------------------------------------


def bytes_elements(items: list[bytes], lie: int | None = None) -> bytes:
    """A BYTES tensor's binary form; ``lie`` replaces the first element's length prefix."""
    parts = []
    for index, item in enumerate(items):
        length = lie if index == 0 and lie is not None else len(item)
        parts.append(struct.pack("<I", length & 0xFFFFFFFF) + item)
    return b"".join(parts)


header_lengths = st.one_of(
    st.none(),
    st.integers(min_value=-(2**64), max_value=2**64).map(str),
    st.sampled_from(["", " 12 ", "0x10", "1e3", "ten", "-0", "١٢", "9" * 5000, "12\x00"]),
    st.text(max_size=12),
)

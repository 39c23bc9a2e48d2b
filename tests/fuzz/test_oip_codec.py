"""The OIP codec under bad input: JSON requests, the binary tensor extension and raw bytes each decode
or raise the project's 4xx error, and what decodes matches what the manifest declares."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from contract.manifest import Manifest
from handlers.runtime.codecs.oip import InferRequest, decode_infer_request
from handlers.runtime.datatypes import OIP_TO_NUMPY
from tests.fuzz.strategies import (
    DIGITS,
    MANIFESTS,
    MINILM,
    bytes_elements,
    dumps,
    expect_decode_or_4xx,
    header_lengths,
    infer_documents,
    nested,
    tensor_objects,
)

models = st.sampled_from(sorted(MANIFESTS))


def _check_decoded(result: InferRequest | Exception, manifest: Manifest) -> None:
    """A decoded request holds exactly the manifest's inputs, with its datatypes and within its limits."""
    if not isinstance(result, InferRequest):
        return
    assert set(result.inputs) == {t.name for t in manifest.inputs}
    for spec in manifest.inputs:
        array = result.inputs[spec.name]
        assert array.dtype == OIP_TO_NUMPY[spec.datatype]
        assert len(array.shape) == len(spec.shape)
        assert all(e in (-1, d) for d, e in zip(array.shape, spec.shape, strict=True))
        assert 1 <= array.shape[0] <= manifest.limits.max_batch
    assert sum(a.size for a in result.inputs.values()) <= manifest.limits.max_elements
    assert set(result.outputs) <= {t.name for t in manifest.outputs}


@given(model=models, data=st.data())
def test_json_requests_decode_or_are_a_clear_4xx(model: str, data: st.DataObject) -> None:
    manifest = MANIFESTS[model]
    body = dumps(data.draw(infer_documents(manifest)))
    _check_decoded(expect_decode_or_4xx(lambda: decode_infer_request(body, None, manifest)), manifest)


@given(model=models, raw=st.binary(max_size=512), length=header_lengths)
@example(model="digits", raw=b"\x1f\x8b\x08\x00", length=None)  # a gzip header
@example(model="digits", raw=b'{"inputs": [' * 2000, length=None)
@example(model="minilm", raw=b"\xff\xfe{\x00}\x00", length=None)  # UTF-16
def test_raw_bytes_decode_or_are_a_clear_4xx(model: str, raw: bytes, length: str | None) -> None:
    manifest = MANIFESTS[model]
    _check_decoded(expect_decode_or_4xx(lambda: decode_infer_request(raw, length, manifest)), manifest)


@st.composite
def binary_requests(draw: st.DrawFn, manifest: Manifest) -> tuple[bytes, str | None]:
    """A binary-extension body: a JSON header (maybe lying about sizes), tensors, and a header length
    that is right, off by some bytes, or not a number at all."""
    spec = manifest.inputs[0]
    batch = draw(st.integers(1, 3))
    shape = [batch if d == -1 else d for d in spec.shape]
    if spec.datatype == "BYTES":
        items = draw(st.lists(st.binary(max_size=12), min_size=batch, max_size=batch))
        lie = draw(st.one_of(st.none(), st.integers(0, 2**32 - 1)))
        payload = bytes_elements(items, lie)
    else:
        payload = np.asarray(draw(st.lists(st.floats(width=32), min_size=64 * batch, max_size=64 * batch)))
        payload = payload.astype("<f4").tobytes()
    payload = draw(st.sampled_from([payload, payload[:-1], payload + b"\0", b""]))
    size: Any = draw(st.one_of(st.just(len(payload)), st.integers(-(2**63), 2**63), st.just(None)))
    tensor: Any = {"name": spec.name, "datatype": spec.datatype, "shape": shape}
    if size is not None:
        tensor["parameters"] = {"binary_data_size": size}
    if draw(st.booleans()):
        tensor = draw(tensor_objects(manifest)) if draw(st.booleans()) else tensor
    header = dumps({"inputs": [tensor]})
    length = draw(
        st.one_of(
            st.just(str(len(header))),
            st.integers(-(2**40), 2**40).map(str),
            st.integers(-4, 4).map(lambda d: str(len(header) + d)),
            header_lengths,
        )
    )
    return header + payload, length


@given(model=models, data=st.data())
def test_binary_extension_decodes_or_is_a_clear_4xx(model: str, data: st.DataObject) -> None:
    manifest = MANIFESTS[model]
    body, length = data.draw(binary_requests(manifest))
    result = expect_decode_or_4xx(lambda: decode_infer_request(body, length, manifest))
    _check_decoded(result, manifest)


def test_a_valid_binary_request_still_decodes() -> None:
    """The fuzzed rejections are not everything being rejected."""
    pixels = np.arange(128, dtype="<f4")
    header = json.dumps(
        {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2, 64], "parameters": {"binary_data_size": 512}}]}
    ).encode()
    request = decode_infer_request(header + pixels.tobytes(), str(len(header)), DIGITS)
    assert np.array_equal(request.inputs["pixels"].reshape(-1), pixels)
    text = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [["hi"]]}]})
    decoded = expect_decode_or_4xx(lambda: decode_infer_request(text.encode(), None, MINILM))
    assert not isinstance(decoded, InferRequest), "data nested deeper than the shape is refused"


@given(depth=st.integers(min_value=900, max_value=1100), key=st.sampled_from(["name", "datatype", "shape", "data"]))
def test_values_nested_near_the_parsers_depth_limit_are_a_4xx(depth: int, key: str) -> None:
    """orjson parses up to 1,024 levels; a value that deep must not exhaust the recursion limit when
    an error message quotes it (a RecursionError, so a 500, before the fix)."""
    tensor: dict[str, Any] = {"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}
    tensor[key] = nested(depth)
    body = json.dumps({"inputs": [tensor]}).encode()
    result = expect_decode_or_4xx(lambda: decode_infer_request(body, None, DIGITS))
    assert not isinstance(result, InferRequest)

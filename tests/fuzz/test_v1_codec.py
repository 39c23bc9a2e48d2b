"""The V1 codec (TF Serving / KServe V1 predict) under bad input: decode, or the project's 4xx error."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from handlers.runtime.codecs.v1 import decode_predict_request
from handlers.runtime.datatypes import OIP_TO_NUMPY
from tests.fuzz.strategies import MANIFESTS, deep_values, dumps, expect_decode_or_4xx, json_values, scalars

models = st.sampled_from(sorted(MANIFESTS))
b64_text = st.text(max_size=9).map(lambda t: base64.b64encode(t.encode()).decode())
b64_values = st.fixed_dictionaries({"b64": st.one_of(b64_text, st.text(max_size=12), json_values)})
ROW = st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=64, max_size=64)
VALID = {"minilm": st.one_of(st.text(max_size=20), b64_values), "digits": ROW}


def _instance(model: str) -> st.SearchStrategy[Any]:
    if model == "minilm":
        return st.one_of(
            st.text(max_size=20), b64_values, scalars, deep_values, st.lists(st.text(max_size=5), max_size=3)
        )
    row = ROW
    return st.one_of(
        row,
        st.lists(scalars, max_size=66),
        st.fixed_dictionaries({"pixels": row}),
        st.dictionaries(st.text(max_size=8), json_values, max_size=2),
        deep_values,
        json_values,
    )


@st.composite
def predict_documents(draw: st.DrawFn, model: str) -> Any:
    instances = st.one_of(st.lists(VALID[model], min_size=1, max_size=3), st.lists(_instance(model), max_size=3))
    columnar = st.one_of(instances, st.dictionaries(st.sampled_from(["pixels", "text", "x"]), instances, max_size=2))
    document: Any = draw(
        st.one_of(
            st.fixed_dictionaries({"instances": st.one_of(instances, json_values)}),
            st.fixed_dictionaries({"inputs": st.one_of(columnar, json_values)}),
            st.fixed_dictionaries({"instances": instances, "inputs": columnar}),
            json_values,
        )
    )
    return document


@given(model=models, data=st.data())
def test_predict_documents_decode_or_are_a_clear_4xx(model: str, data: st.DataObject) -> None:
    manifest = MANIFESTS[model]
    body = dumps(data.draw(predict_documents(model)))
    result = expect_decode_or_4xx(lambda: decode_predict_request(body, manifest))
    if isinstance(result, tuple):
        fmt, arrays = result
        assert fmt in ("instances", "inputs")
        for spec in manifest.inputs:
            assert arrays[spec.name].dtype == OIP_TO_NUMPY[spec.datatype]
            assert len(arrays[spec.name].shape) == len(spec.shape)
            assert 1 <= arrays[spec.name].shape[0] <= manifest.limits.max_batch


@given(model=models, raw=st.binary(max_size=512))
@example(model="minilm", raw=json.dumps({"instances": [{"b64": "é"}]}).encode())  # a 500 before the fix
@example(model="minilm", raw=b'{"instances": ' + b"[" * 1000 + b'"a"' + b"]" * 1000 + b"}")  # a 500 before the fix
@example(model="digits", raw=b'{"instances": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}")
def test_raw_bytes_decode_or_are_a_clear_4xx(model: str, raw: bytes) -> None:
    expect_decode_or_4xx(lambda: decode_predict_request(raw, MANIFESTS[model]))


def test_valid_requests_still_decode() -> None:
    row = np.arange(64, dtype=np.float32).tolist()
    fmt, arrays = decode_predict_request(json.dumps({"instances": [row, row]}).encode(), MANIFESTS["digits"])
    assert fmt == "instances" and arrays["pixels"].shape == (2, 64)
    fmt, arrays = decode_predict_request(
        json.dumps({"inputs": ["hello", {"b64": "d29ybGQ="}]}).encode(), MANIFESTS["minilm"]
    )
    assert fmt == "inputs" and arrays["text"].tolist() == [b"hello", b"world"]

"""Malformed requests: each gets a 4xx whose message says what was wrong; none reaches the model.

One file past 400 lines on purpose: it is the catalogue of malformed requests, one table of cases
per protocol, read and extended as a whole."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from onnxfn.local.events import api_gateway_event

OK_ROW = [0.0] * 64
DIGITS = "/v2/models/digits/infer"
MINILM = "/v2/models/minilm/infer"
JSON_HEADERS = {"Content-Type": "application/json"}


def t(name="pixels", shape=(1, 64), datatype="FP32", data=None, **extra):
    item = {"name": name, "shape": list(shape), "datatype": datatype, **extra}
    if data is not None:
        item["data"] = data
    return item


def body(*inputs, **extra):
    return json.dumps({"inputs": list(inputs), **extra})


def binary(header: dict, payload: bytes, length: int | str | None = None) -> tuple[bytes, dict]:
    raw = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream"}
    headers["Inference-Header-Content-Length"] = str(len(raw) if length is None else length)
    return raw + payload, headers


def b64_event(path, text):
    event = api_gateway_event("POST", path, "{}", {})
    event["body"], event["isBase64Encoded"] = text, True
    return event


CASES = [
    # (case id, model, method, path, body, headers, status, message fragment)
    ("malformed-json", "digits", "POST", DIGITS, "{bad", None, 400, "not valid JSON"),
    ("json-array", "digits", "POST", DIGITS, "[]", None, 400, "expected a JSON object"),
    ("no-inputs", "digits", "POST", DIGITS, "{}", None, 400, '"inputs" must be a non-empty list'),
    ("inputs-object", "digits", "POST", DIGITS, '{"inputs": {}}', None, 400, '"inputs" must be a non-empty list'),
    ("inputs-empty", "digits", "POST", DIGITS, '{"inputs": []}', None, 400, 'this model expects "pixels"'),
    ("input-not-object", "digits", "POST", DIGITS, '{"inputs": ["x"]}', None, 400, "expected a tensor object"),
    ("unknown-input", "digits", "POST", DIGITS, body(t(name="image", data=OK_ROW)), None, 400, "unknown input 'image'"),
    ("duplicate-input", "digits", "POST", DIGITS, body(t(data=OK_ROW), t(data=OK_ROW)), None, 400, "more than once"),
    (
        "wrong-datatype",
        "digits",
        "POST",
        DIGITS,
        body(t(datatype="INT64", data=[0] * 64)),
        None,
        400,
        "expected datatype FP32, got 'INT64'",
    ),
    (
        "missing-datatype",
        "digits",
        "POST",
        DIGITS,
        json.dumps({"inputs": [{"name": "pixels", "shape": [1, 64], "data": OK_ROW}]}),
        None,
        400,
        "expected datatype FP32, got None",
    ),
    (
        "shape-not-list",
        "digits",
        "POST",
        DIGITS,
        body(t(shape="1x64", data=OK_ROW)),
        None,
        400,
        '"shape" must be a list',
    ),
    (
        "shape-wrong-dim",
        "digits",
        "POST",
        DIGITS,
        body(t(shape=(2, 63), data=[0.0] * 126)),
        None,
        400,
        'input "pixels": expected FP32 shape [-1, 64], got shape [2, 63]',
    ),
    (
        "shape-wrong-rank",
        "digits",
        "POST",
        DIGITS,
        body(t(shape=(64,), data=OK_ROW)),
        None,
        400,
        "expected FP32 shape [-1, 64]",
    ),
    ("shape-zero", "digits", "POST", DIGITS, body(t(shape=(0, 64), data=[])), None, 400, "at least 1"),
    ("shape-negative", "digits", "POST", DIGITS, body(t(shape=(-1, 64), data=OK_ROW)), None, 400, "at least 1"),
    (
        "count-mismatch",
        "digits",
        "POST",
        DIGITS,
        body(t(shape=(2, 64), data=OK_ROW)),
        None,
        400,
        "holds 64 elements in shape [64], expected 128",
    ),
    ("ragged", "digits", "POST", DIGITS, body(t(shape=(2, 64), data=[OK_ROW, [0.0] * 63])), None, 400, "ragged"),
    (
        "strings-for-fp32",
        "digits",
        "POST",
        DIGITS,
        body(t(data=["a"] * 64)),
        None,
        400,
        "expected FP32 values, got strings",
    ),
    (
        "bools-for-fp32",
        "digits",
        "POST",
        DIGITS,
        body(t(data=[True] * 64)),
        None,
        400,
        "expected FP32 values, got booleans",
    ),
    ("nulls", "digits", "POST", DIGITS, body(t(data=[None] * 64)), None, 400, "expected FP32 values, got mixed values"),
    ("no-data", "digits", "POST", DIGITS, body(t()), None, 400, 'neither "data" nor parameters.binary_data_size'),
    (
        "batch-over-limit",
        "digits",
        "POST",
        DIGITS,
        body(t(shape=(1025, 64), data=[0.0] * 1025 * 64)),
        None,
        413,
        "batch of 1025 is over the limit of 1024",
    ),
    (
        "unknown-output",
        "digits",
        "POST",
        DIGITS,
        body(t(data=OK_ROW), outputs=[{"name": "logits"}]),
        None,
        400,
        "unknown output 'logits'",
    ),
    (
        "duplicate-output",
        "digits",
        "POST",
        DIGITS,
        body(t(data=OK_ROW), outputs=[{"name": "label"}, {"name": "label"}]),
        None,
        400,
        "requested more than once",
    ),
    (
        "outputs-not-list",
        "digits",
        "POST",
        DIGITS,
        body(t(data=OK_ROW), outputs="label"),
        None,
        400,
        '"outputs" must be a list',
    ),
    ("id-not-string", "digits", "POST", DIGITS, body(t(data=OK_ROW), id=5), None, 400, '"id" must be a string'),
    (
        "parameters-not-object",
        "digits",
        "POST",
        DIGITS,
        body(t(data=OK_ROW, parameters=[1])),
        None,
        400,
        '"parameters" must be an object',
    ),
    (
        "header-length-not-int",
        "digits",
        "POST",
        DIGITS,
        *binary({"inputs": [t(parameters={"binary_data_size": 256})]}, b"\0" * 256, "ten"),
        400,
        "Inference-Header-Content-Length: expected an integer",
    ),
    (
        "header-length-too-big",
        "digits",
        "POST",
        DIGITS,
        *binary({"inputs": [t(parameters={"binary_data_size": 256})]}, b"\0" * 256, 100000),
        400,
        "outside the body",
    ),
    (
        "binary-size-wrong",
        "digits",
        "POST",
        DIGITS,
        *binary({"inputs": [t(parameters={"binary_data_size": 200})]}, b"\0" * 200),
        400,
        "binary_data_size is 200 bytes, expected 256",
    ),
    (
        "binary-size-without-header",
        "digits",
        "POST",
        DIGITS,
        body(t(parameters={"binary_data_size": 256})),
        None,
        400,
        "without the Inference-Header-Content-Length header",
    ),
    (
        "binary-extra-bytes",
        "digits",
        "POST",
        DIGITS,
        *binary({"inputs": [t(parameters={"binary_data_size": 256})]}, b"\0" * 300),
        400,
        "binary section holds 300 bytes but the inputs declare 256",
    ),
    (
        "binary-size-negative",
        "digits",
        "POST",
        DIGITS,
        *binary({"inputs": [t(parameters={"binary_data_size": -4})]}, b""),
        400,
        "binary_data_size must be a non-negative",
    ),
    (
        "unknown-model",
        "digits",
        "POST",
        "/v2/models/resnet/infer",
        body(t(data=OK_ROW)),
        None,
        404,
        "model 'resnet' is not served here",
    ),
    (
        "unknown-version",
        "digits",
        "POST",
        "/v2/models/digits/versions/7/infer",
        body(t(data=OK_ROW)),
        None,
        404,
        "has no version '7'",
    ),
    ("unknown-route", "digits", "GET", "/v3/anything", None, None, 404, "no route for GET /v3/anything"),
    ("wrong-method", "digits", "GET", DIGITS, None, None, 404, "no route for GET"),
    (
        "v1-no-instances",
        "digits",
        "POST",
        "/v1/models/digits:predict",
        '{"rows": []}',
        None,
        400,
        'expected exactly one of {"instances"',
    ),
    (
        "v1-both-formats",
        "digits",
        "POST",
        "/v1/models/digits:predict",
        '{"instances": [], "inputs": []}',
        None,
        400,
        "exactly one of",
    ),
    (
        "v1-empty-instances",
        "digits",
        "POST",
        "/v1/models/digits:predict",
        '{"instances": []}',
        None,
        400,
        '"instances": expected a non-empty list',
    ),
    (
        "v1-short-instance",
        "digits",
        "POST",
        "/v1/models/digits:predict",
        json.dumps({"instances": [[0.0] * 63]}),
        None,
        400,
        "expected FP32 shape [-1, 64], got shape [1, 63]",
    ),
    (
        "v1-wrong-keys",
        "digits",
        "POST",
        "/v1/models/digits:predict",
        json.dumps({"inputs": {"image": [OK_ROW]}}),
        None,
        400,
        "expected exactly the keys ['pixels']",
    ),
    ("v1-malformed", "digits", "POST", "/v1/models/digits:predict", "instances=1", None, 400, "not valid JSON"),
    (
        "text-numbers",
        "minilm",
        "POST",
        MINILM,
        body(t("text", (2,), "BYTES", [1, 2])),
        None,
        400,
        "expected strings for BYTES, got integers",
    ),
    (
        "text-batch-over-limit",
        "minilm",
        "POST",
        MINILM,
        body(t("text", (65,), "BYTES", ["a"] * 65)),
        None,
        413,
        "batch of 65 is over the limit of 64",
    ),
    (
        "text-bad-b64",
        "minilm",
        "POST",
        "/v1/models/minilm:predict",
        json.dumps({"instances": [{"b64": "!!"}]}),
        None,
        400,
        "b64 value is not base64",
    ),
    (
        "text-binary-truncated",
        "minilm",
        "POST",
        MINILM,
        *binary(
            {"inputs": [t("text", (1,), "BYTES", parameters={"binary_data_size": 6})]}, struct.pack("<I", 50) + b"hi"
        ),
        400,
        "runs past the end",
    ),
    (
        "text-binary-not-utf8",
        "minilm",
        "POST",
        MINILM,
        *binary(
            {"inputs": [t("text", (1,), "BYTES", parameters={"binary_data_size": 6})]},
            struct.pack("<I", 2) + b"\xff\xfe",
        ),
        400,
        "expected UTF-8 text",
    ),
    (
        "text-binary-count",
        "minilm",
        "POST",
        MINILM,
        *binary(
            {"inputs": [t("text", (2,), "BYTES", parameters={"binary_data_size": 6})]}, struct.pack("<I", 2) + b"hi"
        ),
        400,
        "holds 1 strings, expected 2",
    ),
]


@pytest.mark.parametrize(
    ("model", "method", "path", "payload", "headers", "status", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_request_is_a_clear_4xx(serve, model, method, path, payload, headers, status, fragment):
    served = serve(model)
    reply = served.client.call(method, path, payload, headers if headers is not None else JSON_HEADERS)
    assert reply.status == status, reply.body
    document = reply.json()
    assert set(document) == {"error"}
    assert fragment in document["error"], document["error"]
    assert "Traceback" not in document["error"]
    assert len(document["error"]) <= 500


def test_table_is_large_enough():
    assert len(CASES) >= 30


def test_invalid_base64_body(serve):
    served = serve("digits")
    reply = served.client.call("POST", DIGITS, event=b64_event(DIGITS, "%%%not-base64%%%"))
    assert reply.status == 400
    assert "not valid base64" in reply.json()["error"]


def test_body_over_payload_limit_is_413_before_decoding(serve):
    served = serve("digits", {"MAX_REQUEST_BYTES": "2000"})
    big = body(t(shape=(10, 64), data=[[0.0] * 64] * 10))
    reply = served.client.post(DIGITS, big)
    assert reply.status == 413
    assert "over the limit of 2000 bytes" in reply.json()["error"]
    assert not served.store.ready  # rejected before the model was needed
    encoded = served.client.call("POST", DIGITS, event=b64_event(DIGITS, base64.b64encode(big.encode()).decode()))
    assert encoded.status == 413


def test_bad_requests_never_load_the_model(serve):
    served = serve("digits")
    for case in CASES[:20]:
        if case[1] == "digits" and case[3] == DIGITS:
            served.client.call(case[2], case[3], case[4], case[5] or JSON_HEADERS)
    assert not served.store.ready
    assert all(key.endswith("manifest.json") for key in served.get_calls)

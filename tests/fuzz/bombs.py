"""Resource bombs: requests built to make the handler allocate far more than they carry.

Each is answered with a 4xx and a message (or, for the one valid bomb, a 200) with memory bounded.
``test_resource_bombs`` measures each in-process with tracemalloc; ``run_in_child`` measures peak RSS
per bomb in a fresh process (VmHWM reset through /proc/self/clear_refs), native allocations included.
"""

from __future__ import annotations

import gc
import gzip
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from onnxfn.local.events import api_gateway_event

MB = 1024 * 1024
ROW = [0.0] * 64


@dataclass(frozen=True)
class Bomb:
    id: str
    model: str
    path: str
    body: Callable[[], bytes]
    status: int
    fragment: str
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})

    def event(self, body: bytes | None = None) -> dict[str, Any]:
        return api_gateway_event("POST", self.path, self.body() if body is None else body, self.headers)


def _oip(name: str, datatype: str, shape: list[int], data: Any, **extra: Any) -> bytes:
    tensor = {"name": name, "datatype": datatype, "shape": shape, "data": data, **extra}
    return json.dumps({"inputs": [tensor]}).encode()


def _binary(tensors: list[dict[str, Any]], payload: bytes, length: str | None = None) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": tensors}).encode()
    headers = {"Content-Type": "application/octet-stream"}
    headers["Inference-Header-Content-Length"] = str(len(header)) if length is None else length
    return header + payload, headers


def _binary_bomb(
    id: str, model: str, tensors: list[dict[str, Any]], payload: bytes, length: str | None, status: int, fragment: str
) -> Bomb:
    body, headers = _binary(tensors, payload, length)
    return Bomb(id, model, f"/v2/models/{model}/infer", lambda: body, status, fragment, headers)


def _deep(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


DIGITS_V2 = "/v2/models/digits/infer"
MINILM_V2 = "/v2/models/minilm/infer"
PIXELS_BINARY = {"name": "pixels", "datatype": "FP32", "shape": [1, 64]}
TEXT_BINARY = {"name": "text", "datatype": "BYTES", "shape": [1]}
GZIP_ZEROS = 64 * MB

BOMBS: list[Bomb] = [
    # declared shapes far larger than the data
    Bomb(
        "shape-100000000x64-with-64-values",
        "digits",
        DIGITS_V2,
        lambda: _oip("pixels", "FP32", [100_000_000, 64], ROW),
        413,
        "batch of 100000000 is over the limit of 1024 per request",
    ),
    Bomb(
        "shape-2^62x64-with-64-values",
        "digits",
        DIGITS_V2,
        lambda: _oip("pixels", "FP32", [2**62, 64], ROW),
        413,
        "over the limit of 1024",
    ),
    Bomb(
        "shape-1x100000000",
        "digits",
        DIGITS_V2,
        lambda: _oip("pixels", "FP32", [1, 100_000_000], ROW),
        400,
        'input "pixels": expected FP32 shape [-1, 64], got shape [1, 100000000]',
    ),
    Bomb(
        "text-shape-100000000-with-1-string",
        "minilm",
        MINILM_V2,
        lambda: _oip("text", "BYTES", [100_000_000], ["a"]),
        413,
        "batch of 100000000 is over the limit of 64",
    ),
    # batches over the manifest's max_batch, with real data
    Bomb(
        "batch-1025-rows",
        "digits",
        DIGITS_V2,
        lambda: _oip("pixels", "FP32", [1025, 64], [ROW] * 1025),
        413,
        "batch of 1025 is over the limit of 1024",
    ),
    Bomb(
        "v1-1025-instances",
        "digits",
        "/v1/models/digits:predict",
        lambda: json.dumps({"instances": [ROW] * 1025}).encode(),
        413,
        "batch of 1025 is over the limit of 1024",
    ),
    Bomb(
        "text-batch-65",
        "minilm",
        MINILM_V2,
        lambda: _oip("text", "BYTES", [65], ["a"] * 65),
        413,
        "batch of 65 is over the limit of 64",
    ),
    # deeply nested JSON
    Bomb(
        "body-nested-100000-levels",
        "digits",
        DIGITS_V2,
        lambda: _deep(100_000).encode(),
        400,
        "not valid JSON: depth limit exceeded",
    ),
    Bomb(
        "data-nested-100000-levels",
        "digits",
        DIGITS_V2,
        lambda: _oip("pixels", "FP32", [1, 64], "@").replace(b'"@"', _deep(100_000).encode()),
        400,
        "not valid JSON: depth limit exceeded",
    ),
    Bomb(  # within the parser's 1,024 levels: quoting it in the message was a RecursionError (500)
        "shape-nested-1000-levels",
        "digits",
        DIGITS_V2,
        lambda: _oip("pixels", "FP32", [1, 64], ROW).replace(b"[1, 64]", _deep(1000).encode()),
        400,
        '"shape" must be a list of integers, got [[[[...]]]]',
    ),
    Bomb(  # a 500 (RecursionError) before the fix
        "v1-text-nested-1000-levels",
        "minilm",
        "/v1/models/minilm:predict",
        lambda: b'{"instances": ' + _deep(1000, '"a"').encode() + b"}",
        400,
        "lists nest deeper than its shape",
    ),
    # bodies over 6 MB
    Bomb(
        "body-7MB-json",
        "digits",
        DIGITS_V2,
        lambda: _oip("pixels", "FP32", [1, 64], ROW) + b" " * (7 * MB),
        413,
        "over the limit of 6291456 bytes",
    ),
    Bomb(
        "body-7MB-binary-base64",
        "digits",
        DIGITS_V2,
        lambda: bytes(7 * MB),
        413,
        "over the limit of 6291456 bytes",
        {"Content-Type": "application/octet-stream"},
    ),
    # binary header lengths that lie
    _binary_bomb(
        "header-length-beyond-body",
        "digits",
        [{**PIXELS_BINARY, "parameters": {"binary_data_size": 256}}],
        bytes(256),
        str(10**9),
        400,
        "Inference-Header-Content-Length: 1000000000 is outside the body's",
    ),
    _binary_bomb(
        "header-length-negative",
        "digits",
        [{**PIXELS_BINARY, "parameters": {"binary_data_size": 256}}],
        bytes(256),
        "-5",
        400,
        "Inference-Header-Content-Length: -5 is outside the body's",
    ),
    _binary_bomb(
        "header-length-not-numeric",
        "digits",
        [{**PIXELS_BINARY, "parameters": {"binary_data_size": 256}}],
        bytes(256),
        "0x100",
        400,
        "Inference-Header-Content-Length: expected an integer byte count, got '0x100'",
    ),
    _binary_bomb(
        "header-length-5000-digits",
        "digits",
        [{**PIXELS_BINARY, "parameters": {"binary_data_size": 256}}],
        bytes(256),
        "9" * 5000,
        400,
        "Inference-Header-Content-Length: expected an integer byte count",
    ),
    _binary_bomb(
        "binary-data-size-2^63-past-body",
        "digits",
        [{**PIXELS_BINARY, "parameters": {"binary_data_size": 2**63}}],
        bytes(256),
        None,
        400,
        "binary section holds 256 bytes but the inputs declare 9223372036854775808 in binary_data_size",
    ),
    # BYTES elements of absurd declared length or count
    _binary_bomb(
        "bytes-element-declares-4GiB",
        "minilm",
        [{**TEXT_BINARY, "parameters": {"binary_data_size": 6}}],
        struct.pack("<I", 2**32 - 1) + b"hi",
        None,
        400,
        "binary BYTES element of 4294967295 bytes runs past the end of its data",
    ),
    _binary_bomb(
        "bytes-1500000-empty-elements-for-shape-1",
        "minilm",
        [{**TEXT_BINARY, "parameters": {"binary_data_size": 4 * 1_500_000}}],
        bytes(4 * 1_500_000),
        None,
        400,
        "binary data holds more than 1 strings, expected 1",
    ),
    # one long string among values: np.array sized every element to it (UCS-4), 1.28 GB before the fix
    Bomb(
        "json-5MB-string-among-63-numbers",
        "digits",
        DIGITS_V2,
        lambda: _oip("pixels", "FP32", [1, 64], [0.0] * 63 + ["x" * (5 * MB)]),
        400,
        'input "pixels": expected FP32 values, got strings',
    ),
    Bomb(
        "json-5MB-string-among-63-integers-for-text",
        "minilm",
        MINILM_V2,
        lambda: _oip("text", "BYTES", [64], ["x" * (5 * MB)] + [1] * 63),
        400,
        'input "text": expected strings for BYTES, got integers',
    ),
    # a valid request whose one text is 5.9 MB: the tokenizer took 742 MB and 9.5 s before the fix
    Bomb(
        "valid-one-5.9MB-text",
        "minilm",
        MINILM_V2,
        lambda: _oip("text", "BYTES", [1], ["hello world " * (59 * MB // 120)]),
        200,
        "",
    ),
    # compressed bodies: nothing here inflates them
    Bomb(
        "gzip-64MB-of-zeros-content-encoding",
        "digits",
        DIGITS_V2,
        lambda: gzip.compress(bytes(GZIP_ZEROS), 1),
        415,
        "Content-Encoding 'gzip' is not supported; send the body uncompressed (identity)",
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    ),
    Bomb(
        "gzip-64MB-of-zeros-without-header",
        "digits",
        DIGITS_V2,
        lambda: gzip.compress(bytes(GZIP_ZEROS), 1),
        400,
        "inference request is not valid JSON",
        {"Content-Type": "application/octet-stream"},
    ),
]


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


def run_in_child() -> dict[str, Any]:
    """Every bomb against the real handler in this (fresh) process: status and peak RSS growth in MB.

    Run by ``test_resource_bombs`` as ``python -c``; the models are loaded and warmed first, so the
    growth is what each bomb adds over a served model.
    """
    import boto3
    from moto import mock_aws

    from handlers.runtime.model_store import ModelStore, reset_store
    from handlers.runtime.settings import load_settings
    from onnxfn.local.upload import upload_artifact
    from tests.conftest import BUCKET, ApiClient, artifact

    results: dict[str, Any] = {}
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        client = ApiClient()
        for model, warm in (("digits", {"instances": [ROW]}), ("minilm", {"instances": ["warm up"]})):
            environment = upload_artifact(s3, BUCKET, artifact(model))
            # the in-process mock patches boto3, not the handlers' own S3 reader: the store reads through boto3
            store = ModelStore(load_settings(environment), s3_client_factory=lambda: boto3.client("s3"))
            reset_store(store)
            assert client.post(f"/v1/models/{model}:predict", warm).status == 200
            for bomb in (b for b in BOMBS if b.model == model):  # the model loaded: nothing else to warm up
                event = bomb.event()
                gc.collect()
                before = _status_kb("VmRSS")
                with open("/proc/self/clear_refs", "w") as refs:
                    refs.write("5")  # reset VmHWM to the current RSS
                reply = client.call("POST", bomb.path, event=event)
                peak = _status_kb("VmHWM")
                results[bomb.id] = {"status": reply.status, "peak_mb": round((peak - before) / 1024, 1)}
                del event, reply
    return results

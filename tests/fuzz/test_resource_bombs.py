"""Resource bombs are rejected before allocation: each gets its 4xx and message while the memory the
handler allocates stays bounded (tracemalloc in-process per bomb; peak RSS per bomb in a child)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import tracemalloc
import uuid
import zipfile
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from contract.manifest import TensorSpec
from handlers.runtime import jsonio
from handlers.runtime.batch import arrays as batch_arrays
from handlers.runtime.batch import files as batch_files
from handlers.runtime.codecs.oip import decode_infer_request
from handlers.runtime.errors import InvalidInput
from handlers.runtime.settings import load_data_settings
from tests.conftest import BUCKET, ROOT
from tests.fuzz.bombs import BOMBS, MB, Bomb
from tests.fuzz.strategies import DIGITS

T = TypeVar("T")

# What the handler may allocate (Python objects and numpy arrays) for any one bomb, beyond what parsing
# its body as JSON costs: orjson builds a document before anything can be checked, 11-22 times the
# body's size (65 MB for a body holding one 5 MB string, 96-131 MB for 6 MB of small values).
TRACED_BOUND_MB = 50
RSS_BOUND_MB = 50  # what any one bomb may add to the peak RSS of a process serving the model


def traced_peak_mb(call: Callable[[], T]) -> tuple[T, float]:
    """``call()`` and the peak of memory it allocated, in MB (Python objects and numpy arrays)."""
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak / MB


def json_parse_mb(body: bytes) -> float:
    """What parsing ``body`` as JSON alone allocates at its peak (0 when it is refused at once)."""

    def parse() -> None:
        with contextlib.suppress(jsonio.JSONDecodeError):
            jsonio.loads(body)

    return traced_peak_mb(parse)[1]


@pytest.mark.parametrize("bomb", BOMBS, ids=[b.id for b in BOMBS])
def test_api_bomb_is_rejected_with_bounded_memory(serve: Any, bomb: Bomb) -> None:
    served = serve(bomb.model)
    if bomb.status == 200:  # load the model first: its session is not the request's
        assert served.client.post(f"/v1/models/{bomb.model}:predict", {"instances": ["warm up"]}).status == 200
    else:  # the manifest only: a rejected request never loads the model
        assert served.client.get(f"/v2/models/{bomb.model}").status == 200
    body = bomb.body()
    event = bomb.event(body)
    reply, peak = traced_peak_mb(lambda: served.client.call("POST", bomb.path, event=event))
    assert not served.store.ready or bomb.status == 200, "a rejected request must not load the model"
    is_json = bomb.headers.get("Content-Type") == "application/json" and "Content-Encoding" not in bomb.headers
    parse = json_parse_mb(body) if is_json and reply.status != 413 else 0.0
    print(f"{bomb.id}: {reply.status}, traced peak {peak:.1f} MB (parsing the body as JSON alone: {parse:.1f} MB)")
    assert reply.status == bomb.status, reply.body[:300]
    if bomb.status >= 400:
        assert bomb.fragment in reply.json()["error"], reply.json()
    assert peak < TRACED_BOUND_MB + parse


def test_binary_data_sizes_summing_past_the_body_are_rejected() -> None:
    """Two inputs whose binary_data_size add up to 2^63 (no demo model has two inputs: a manifest that does)."""
    manifest = dataclasses.replace(
        DIGITS,
        inputs=(
            TensorSpec(name="a", datatype="FP32", shape=(-1, 4)),
            TensorSpec(name="b", datatype="FP32", shape=(-1, 4)),
        ),
    )
    tensors = [
        {"name": name, "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 2**62}} for name in "ab"
    ]
    header = json.dumps({"inputs": tensors}).encode()
    body = header + bytes(32)
    with pytest.raises(InvalidInput, match="binary section holds 32 bytes but the inputs declare 9223372036854775808"):
        traced_peak_mb(lambda: decode_infer_request(body, str(len(header)), manifest))


# --- batch files -----------------------------------------------------------------------------------


def _npy(shape: tuple[int, ...], payload: bytes) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def _npz_bomb(inflated: int) -> bytes:
    """An .npz whose one array of zeros inflates to ``inflated`` bytes (written in 1 MB pieces)."""
    buffer = io.BytesIO()
    zeros = bytes(MB)
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("pixels.npy", "w", force_zip64=True) as member,
    ):
        member.write(_npy((inflated // 256, 64), b""))
        for _ in range(inflated // MB):
            member.write(zeros)
    return buffer.getvalue()


def _npz_stored(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


BATCH_BOMBS = [
    # (id, suffix, body builder, fragment of the file's one failure record)
    ("npz-inflating-to-64MB-over-a-16MB-limit", ".npz", lambda: _npz_bomb(64 * MB), "the archive inflates to"),
    (
        "npz-header-claims-10^9-rows-in-256-bytes",
        ".npz",
        lambda: _npz_stored({"pixels.npy": _npy((10**9, 64), bytes(256))}),
        "claims shape [1000000000, 64] float32 (256000000000 bytes) but its member holds",
    ),
    ("npz-member-not-npy", ".npz", lambda: _npz_stored({"pixels": bytes(8 * MB)}), "is not an .npy array"),
    ("npy-negative-rows", ".npy", lambda: _npy((-1, 64), bytes(256 * 4)), "expected non-negative dimensions"),
    ("npy-rows-wrapping-int64", ".npy", lambda: _npy((2**58, 64), bytes(256)), "but the file is smaller"),
    ("jsonl-7MB-line-without-end", ".jsonl", lambda: b"[" + b"0," * (7 * MB // 2), "line 1 is over 6291456 bytes"),
]


@pytest.mark.parametrize(("bomb", "suffix", "build", "fragment"), BATCH_BOMBS, ids=[b[0] for b in BATCH_BOMBS])
def test_batch_file_bomb_fails_the_file_with_bounded_memory(
    serve: Any,
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
    bomb: str,
    suffix: str,
    build: Callable[[], bytes],
    fragment: str,
) -> None:
    monkeypatch.setattr(batch_arrays, "MAX_NPZ_BYTES", 16 * MB)  # the same check as at 512 MB, a bomb quicker to build
    served = serve("digits")
    served.store.get_model()
    data = load_data_settings({"MODEL_NAME": "digits", "DATA_BUCKET": BUCKET})
    key = f"{data.inbox_prefix}bomb-{uuid.uuid4().hex}{suffix}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=build())
    summary, peak = traced_peak_mb(lambda: batch_files.process_object(s3, data, served.store, BUCKET, key, None, None))
    print(f"{bomb}: traced peak {peak:.1f} MB")
    assert (summary.scored, summary.output_key) == (0, None)
    assert summary.records_in == summary.failed >= 1
    assert summary.errors_key is not None
    errors = [json.loads(line) for line in s3.get_object(Bucket=BUCKET, Key=summary.errors_key)["Body"].iter_lines()]
    assert any(fragment in e["error"] for e in errors), errors
    # moto, in this process, holds and copies the object: 7 MB lines cost it, not the handler, ~3 copies
    assert peak < TRACED_BOUND_MB


# --- peak RSS, native allocations included ----------------------------------------------------------


def test_peak_rss_per_bomb_stays_bounded_in_a_fresh_process() -> None:
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs /proc/self/clear_refs to reset the peak RSS between bombs")
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from tests.fuzz.bombs import run_in_child; print(json.dumps(run_in_child()))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "POWERTOOLS_LOG_LEVEL": "CRITICAL"},
        check=False,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    results = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps(results, indent=1))
    assert set(results) == {b.id for b in BOMBS}
    for bomb in BOMBS:
        assert results[bomb.id]["status"] == bomb.status, (bomb.id, results[bomb.id])
    over = {k: v["peak_mb"] for k, v in results.items() if v["peak_mb"] >= RSS_BOUND_MB}
    assert not over, over

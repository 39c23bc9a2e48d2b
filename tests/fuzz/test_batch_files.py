"""Batch files under bad input, end to end on moto: every file ends in a summary whose counts balance
(records in = scored + failed), its failures in the errors file with a reason; never an exception,
which would fail the notification and retry the file into the dead-letter queue."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.runtime.batch import FileSummary, process_object
from handlers.runtime.settings import load_data_settings
from tests.conftest import BUCKET
from tests.fuzz.strategies import DIGITS, dumps, infer_documents, json_values, scalars

Drop = Callable[[str, bytes], FileSummary]
# An example here is several moto S3 calls (~70 ms): a quarter of the profile's examples, never fewer than ci's.
few = settings(max_examples=max(30, settings.default.max_examples // 4))


@pytest.fixture
def drop(serve: Any, s3: Any) -> Drop:
    """Put a file into the digits inbox under a fresh name and run the batch handler's processing on it."""
    served = serve("digits")
    data = load_data_settings({"MODEL_NAME": "digits", "DATA_BUCKET": BUCKET})

    def _drop(suffix: str, body: bytes) -> FileSummary:
        key = f"{data.inbox_prefix}fuzz-{uuid.uuid4().hex}{suffix}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        summary = process_object(s3, data, served.store, BUCKET, key, None, None)
        assert not summary.duplicate
        assert summary.records_in == summary.scored + summary.failed, summary
        if summary.failed:
            assert summary.errors_key is not None
            errors = s3.get_object(Bucket=BUCKET, Key=summary.errors_key)["Body"].read().splitlines()
            assert errors, "every failure is written with its reason"
            assert all(json.loads(line)["error"].strip() for line in errors)
        else:
            assert summary.output_key is not None or summary.records_in == 0
        return summary

    return _drop


ROW = st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=64, max_size=64)
lines = st.one_of(
    ROW.map(dumps),
    infer_documents(DIGITS).map(dumps),
    st.lists(scalars, max_size=66).map(dumps),
    json_values.map(dumps),
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")),
)


@few
@given(body=st.lists(lines, max_size=6).map(b"\n".join), crlf=st.booleans())
def test_json_lines_files(drop: Drop, body: bytes, crlf: bool) -> None:
    drop(".jsonl", body.replace(b"\n", b"\r\n") if crlf else body)


csv_line = st.one_of(
    ROW.map(lambda r: ",".join(map(repr, r))),
    st.lists(st.sampled_from(["1", "", "x", "nan", "1e999", '"', "\r", "\x00"]), max_size=66).map(",".join),
    st.text(max_size=60).map(lambda t: t.replace("\n", "")),
)


@few
@given(lines=st.lists(csv_line, max_size=5))
def test_csv_files(drop: Drop, lines: list[str]) -> None:
    drop(".csv", "\n".join(lines).encode("utf-8", "surrogatepass"))


def _npy_bytes(header: dict[str, Any], payload: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header) if version == (1, 0) else (
        np.lib.format.write_array_header_2_0(buffer, header)
    )
    return buffer.getvalue() + payload


shapes = st.lists(
    st.one_of(st.integers(-3, 70), st.sampled_from([64, 2**31, 2**58, 2**62, 2**63 - 1])), min_size=0, max_size=3
).map(tuple)
dtypes = st.sampled_from(["<f4", "<f8", ">f4", "<i8", "|u1", "|b1", "<U4", "|O"])


@st.composite
def npy_files(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):  # a real array, maybe of the wrong dtype or shape
        rows = draw(st.integers(0, 3))
        cols = draw(st.sampled_from([64, 64, 63, 65]))
        array = np.zeros((rows, cols), dtype=draw(st.sampled_from(["<f4", "<f4", "<f8", "<i4"])))
        buffer = io.BytesIO()
        np.save(buffer, array if draw(st.booleans()) else np.asfortranarray(array))
        raw = buffer.getvalue()
        return raw[: draw(st.integers(0, len(raw)))] if draw(st.integers(0, 3)) == 0 else raw
    header = {"descr": draw(dtypes), "fortran_order": draw(st.booleans()), "shape": draw(shapes)}
    return _npy_bytes(header, draw(st.binary(max_size=600)), draw(st.sampled_from([(1, 0), (2, 0)])))


@few
@given(body=st.one_of(npy_files(), st.binary(max_size=200)))
def test_npy_files(drop: Drop, body: bytes) -> None:
    drop(".npy", body)


@st.composite
def npz_files(draw: st.DrawFn) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(
        buffer, "w", compression=draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    ) as z:
        for _ in range(draw(st.integers(0, 2))):
            name = draw(st.sampled_from(["pixels.npy", "pixels.npy", "other.npy", "pixels", "a/b.npy"]))
            z.writestr(name, draw(npy_files()) if draw(st.integers(0, 4)) else draw(st.binary(max_size=50)))
    raw = buffer.getvalue()
    return raw[: draw(st.integers(0, len(raw)))] if draw(st.integers(0, 5)) == 0 else raw


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile warns when writing the duplicates made on purpose
@few
@given(body=st.one_of(npz_files(), st.binary(max_size=200)))
def test_npz_files(drop: Drop, body: bytes) -> None:
    drop(".npz", body)


def test_valid_files_are_still_scored(drop: Drop) -> None:
    rows = np.zeros((3, 64), dtype=np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, pixels=rows)
    assert drop(".npz", buffer.getvalue()).scored == 3
    buffer = io.BytesIO()
    np.save(buffer, rows)
    assert drop(".npy", buffer.getvalue()).scored == 3
    assert drop(".csv", b"\n".join([b",".join([b"0"] * 64)] * 2)).scored == 2
    summary = drop(".csv", b"1,2\r3\n" + b",".join([b"0"] * 64))  # a bad line fails alone
    assert (summary.scored, summary.failed) == (1, 1)

"""S3 batch files: moto's own S3 notifications, delivered into a moto SQS queue and read back, drive
the handler. In every test: records in = scored + failed, and nothing is written twice."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from handlers.runtime.batch import sink as batch_sink
from handlers.runtime.model_store import LoadedModel
from onnxfn.local.context import LocalContext
from tests.conftest import BUCKET, artifact
from tests.events_support import inbox_queue
from tests.reference import digits_direct, minilm_direct

PIXELS = load_digits().data[:40].astype(np.float32)


@pytest.fixture
def batch(serve, s3, monkeypatch):
    """Serve a model to the batch handler; returns a function that drops a file and runs the handler."""

    def _open(model: str):
        served = serve(model)
        for key, value in {**served.environment, "DATA_BUCKET": BUCKET}.items():
            monkeypatch.setenv(key, value)
        queue = inbox_queue(s3, BUCKET, model)
        from handlers import s3_batch

        def drop(name: str, body: bytes):
            s3.put_object(Bucket=BUCKET, Key=f"inbox/{model}/{name}", Body=body)
            event = queue.event(1)
            assert len(event["Records"]) == 1, "moto delivers one notification per object"
            response = s3_batch.lambda_handler(event, LocalContext())
            queue.settle(event, response)
            return event, response

        return served, queue, drop, s3_batch

    return _open


def _summary(s3, model, name):
    return json.loads(s3.get_object(Bucket=BUCKET, Key=f"outbox/{model}/{name}.summary.json")["Body"].read())


def _lines(s3, key):
    return [json.loads(x) for x in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().splitlines()]


def _balanced(summary):
    assert summary["records_in"] == summary["scored"] + summary["failed"]


def test_jsonl_every_record_kind_with_bad_lines(batch, s3):
    served, _, drop, _ = batch("digits")
    lines = [
        json.dumps(
            {
                "id": "a",
                "inputs": [{"name": "pixels", "shape": [2, 64], "datatype": "FP32", "data": PIXELS[0:2].tolist()}],
            }
        ),  # 1: OIP request, 2 rows
        json.dumps(PIXELS[2].tolist()),  # 2: a V1 instance
        json.dumps({"pixels": PIXELS[3].tolist()}),  # 3: a bare input object
        "{not json",  # 4
        json.dumps([1.0] * 63),  # 5: wrong length
        "",  # blank lines are skipped, not records
        json.dumps({"image": PIXELS[4].tolist()}),  # 7: unknown input
        json.dumps({"instances": PIXELS[5:7].tolist()}),  # 8: a V1 request
    ]
    _, response = drop("mixed.jsonl", "\n".join(lines).encode())
    assert response == {"batchItemFailures": []}
    labels, _ = digits_direct(artifact("digits"), PIXELS[:7])
    out = _lines(s3, "outbox/digits/mixed.jsonl")
    assert [o["line"] for o in out] == [1, 2, 3, 8]
    assert [o["outputs"][0]["data"] for o in out[:1]] == [labels[0:2].tolist()]
    assert out[0]["id"] == "a" and out[0]["model_name"] == "digits"
    assert out[1]["label"] == labels[2] and out[2]["label"] == labels[3]
    assert [p["label"] for p in out[3]["predictions"]] == labels[5:7].tolist()
    errors = _lines(s3, "outbox/digits/mixed.jsonl.errors.jsonl")
    assert [e["line"] for e in errors] == [4, 5, 7]
    assert "not valid JSON" in errors[0]["error"]
    assert "expected FP32 shape [-1, 64], got shape [1, 63]" in errors[1]["error"]
    assert "with exactly the keys ['pixels']" in errors[2]["error"]
    summary = _summary(s3, "digits", "mixed.jsonl")
    assert (summary["records_in"], summary["scored"], summary["failed"]) == (7, 4, 3)
    assert summary["model_version"] == "1" and summary["milliseconds"] > 0
    _balanced(summary)


def test_jsonl_text_model_plain_and_json_strings(batch, s3):
    _, _, drop, _ = batch("minilm")
    texts = ["plain text line", "a JSON string line", "an OIP line"]
    body = "\n".join(
        [
            texts[0],
            json.dumps(texts[1]),
            json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [texts[2]]}]}),
            json.dumps(42),
        ]
    ).encode()
    drop("texts.jsonl", body)
    out = _lines(s3, "outbox/minilm/texts.jsonl")
    assert [o["line"] for o in out] == [1, 2, 3]
    got = np.array([out[0]["embedding"], out[1]["embedding"], out[2]["outputs"][0]["data"]], dtype=np.float32)
    expected = np.concatenate([minilm_direct(artifact("minilm"), [t]) for t in texts])
    cosine = np.sum(got * expected, axis=1)
    assert cosine.min() > 0.99  # batched together here, one by one in the reference (dynamic int8)
    errors = _lines(s3, "outbox/minilm/texts.jsonl.errors.jsonl")
    assert errors[0]["line"] == 4 and "expected strings for BYTES" in errors[0]["error"]
    _balanced(_summary(s3, "minilm", "texts.jsonl"))


def test_csv_with_header_and_a_bad_row(batch, s3):
    _, _, drop, _ = batch("digits")
    rows = [",".join(f"p{i}" for i in range(64))]
    rows += [",".join(str(v) for v in PIXELS[i]) for i in range(5)]
    rows.insert(3, "1,2,three")
    drop("table.csv", "\n".join(rows).encode())
    text = s3.get_object(Bucket=BUCKET, Key="outbox/digits/table.csv")["Body"].read().decode().splitlines()
    header = text[0].split(",")
    assert header[:3] == ["line", "label", "label_name"] and header[-1] == "probabilities_9"
    labels, probabilities = digits_direct(artifact("digits"), PIXELS[:5])
    assert [int(line.split(",")[1]) for line in text[1:]] == labels.tolist()
    np.testing.assert_allclose(float(text[1].split(",")[3]), probabilities[0, 0], atol=1e-6)
    errors = _lines(s3, "outbox/digits/table.csv.errors.jsonl")
    assert errors == [{"line": 4, "error": errors[0]["error"]}] and "numbers" in errors[0]["error"]
    summary = _summary(s3, "digits", "table.csv")
    assert (summary["records_in"], summary["scored"], summary["failed"]) == (6, 5, 1)


def test_npy_and_npz_tensors(batch, s3):
    _, _, drop, _ = batch("digits")
    buffer = io.BytesIO()
    np.save(buffer, PIXELS)
    drop("images.npy", buffer.getvalue())
    result = np.load(io.BytesIO(s3.get_object(Bucket=BUCKET, Key="outbox/digits/images.npz")["Body"].read()))
    labels, probabilities = digits_direct(artifact("digits"), PIXELS)
    np.testing.assert_array_equal(result["label"], labels)
    np.testing.assert_allclose(result["probabilities"], probabilities, atol=1e-6)
    assert result["label_name"].tolist() == [str(x) for x in labels]
    summary = _summary(s3, "digits", "images.npy")
    assert (summary["records_in"], summary["scored"], summary["failed"]) == (40, 40, 0)

    archive = io.BytesIO()
    np.savez(archive, pixels=PIXELS[:10])
    drop("images2.npz", archive.getvalue())
    result = np.load(io.BytesIO(s3.get_object(Bucket=BUCKET, Key="outbox/digits/images2.npz")["Body"].read()))
    np.testing.assert_array_equal(result["label"], labels[:10])


def test_npy_of_the_wrong_dtype_fails_every_row_with_the_reason(batch, s3):
    _, _, drop, _ = batch("digits")
    buffer = io.BytesIO()
    np.save(buffer, PIXELS[:3].astype(np.float64))
    drop("wrong.npy", buffer.getvalue())
    errors = _lines(s3, "outbox/digits/wrong.npy.errors.jsonl")
    assert len(errors) == 1 and "expected FP32 (float32), got float64" in errors[0]["error"]
    summary = _summary(s3, "digits", "wrong.npy")
    assert (summary["records_in"], summary["scored"], summary["failed"]) == (1, 0, 1)
    assert summary["output_key"] is None
    assert not any(k.startswith("outbox/digits/wrong.npz") for k in _keys(s3, "outbox/digits/"))


@pytest.mark.parametrize(
    ("name", "body", "fragment"),
    [
        ("truncated.npy", lambda: _npy_bytes(PIXELS)[:500], "the file is smaller"),
        ("not-really.npy", lambda: b"hello, this is not numpy", "could not be read as npy"),
        ("lies.npy", lambda: _npy_header_claiming((3_000_000, 64)), "the file is smaller"),
        ("plain.npz", lambda: _npy_bytes(PIXELS), "not a readable .npz archive"),
        ("corrupt.npz", lambda: b"PK\x03\x04garbage", "not a readable .npz archive"),
        ("scalar.npz", lambda: _npz_bytes(pixels=np.float32(1.0)), "leading row dimension"),
    ],
)
def test_malformed_tensor_files_are_reported_not_retried(batch, s3, name, body, fragment):
    _, _, drop, _ = batch("digits")
    _, response = drop(name, body())
    assert response == {"batchItemFailures": []}  # reported, not sent back for retries into the DLQ
    errors = _lines(s3, f"outbox/digits/{name}.errors.jsonl")
    assert len(errors) == 1 and fragment in errors[0]["error"], errors
    summary = _summary(s3, "digits", name)
    assert summary["output_key"] is None and summary["failed"] == summary["records_in"] >= 1
    _balanced(summary)


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_header_claiming(shape):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0" * 256


def test_unsupported_file_type_gets_a_failure_record_not_an_output(batch, s3):
    _, _, drop, _ = batch("digits")
    drop("notes.txt", b"hello")
    errors = _lines(s3, "outbox/digits/notes.txt.errors.jsonl")
    assert "unsupported file type '.txt'" in errors[0]["error"]
    assert "outbox/digits/notes.txt" not in _keys(s3, "outbox/digits/")
    summary = _summary(s3, "digits", "notes.txt")
    assert summary["output_key"] is None and summary["failed"] == 1


def _keys(s3, prefix):
    return {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])}


def _versions(s3, key):
    return [v for v in s3.list_object_versions(Bucket=BUCKET, Prefix=key).get("Versions", []) if v["Key"] == key]


def test_duplicate_notification_writes_no_second_output(batch, s3):
    _, queue, drop, s3_batch = batch("digits")
    event, _ = drop("dup.jsonl", json.dumps(PIXELS[0].tolist()).encode())
    again = s3_batch.lambda_handler(event, LocalContext())  # the same notification, delivered again
    assert again == {"batchItemFailures": []}
    assert len(_versions(s3, "outbox/digits/dup.jsonl")) == 1
    # a new version of the input is new work: scored again into the same key
    drop("dup.jsonl", json.dumps(PIXELS[1].tolist()).encode())
    assert len(_versions(s3, "outbox/digits/dup.jsonl")) == 2


class SimulatedCrash(BaseException):
    """Stands for the process dying (timeout, out of memory kill): nothing in the handler catches it."""


def test_crash_part_way_leaves_nothing_that_looks_complete_and_the_retry_finishes(batch, s3, monkeypatch):
    served, queue, _, s3_batch = batch("digits")
    monkeypatch.setattr(batch_sink, "ROWS_PER_GB", 64)  # small chunks: 64 rows at 1 GB
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
    body = "\n".join(json.dumps(PIXELS[i % 40].tolist()) for i in range(300)).encode()
    original = LoadedModel.run
    calls = {"n": 0}

    def crashing(self, inputs, outputs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise SimulatedCrash("simulated crash in the third chunk")
        return original(self, inputs, outputs)

    monkeypatch.setattr(LoadedModel, "run", crashing)
    s3.put_object(Bucket=BUCKET, Key="inbox/digits/big.jsonl", Body=body)
    event = queue.event(1)
    with pytest.raises(SimulatedCrash):
        s3_batch.lambda_handler(event, LocalContext())  # the invocation dies; SQS will redeliver
    assert not any(k.startswith("outbox/digits/big.jsonl") for k in _keys(s3, "outbox/digits/"))
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []

    monkeypatch.setattr(LoadedModel, "run", original)
    response = s3_batch.lambda_handler(event, LocalContext())  # SQS redelivers the same notification
    assert response == {"batchItemFailures": []}
    out = _lines(s3, "outbox/digits/big.jsonl")
    assert [o["line"] for o in out] == list(range(1, 301))
    labels, _ = digits_direct(artifact("digits"), PIXELS)
    assert [o["label"] for o in out] == [int(labels[i % 40]) for i in range(300)]
    assert len(_versions(s3, "outbox/digits/big.jsonl")) == 1
    summary = _summary(s3, "digits", "big.jsonl")
    assert (summary["records_in"], summary["scored"], summary["failed"]) == (300, 300, 0)


def test_large_outputs_stream_through_multipart_and_appear_only_on_commit(s3):
    from handlers.runtime.s3_io import ObjectWriter

    writer = ObjectWriter(s3, BUCKET, "outbox/test/large.bin", "application/octet-stream", part_bytes=5 * 1024 * 1024)
    block = b"x" * (1024 * 1024)
    for _ in range(11):
        writer.write(block)
    assert len(s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"]) == 1
    assert "outbox/test/large.bin" not in _keys(s3, "outbox/test/")
    writer.commit()
    assert s3.head_object(Bucket=BUCKET, Key="outbox/test/large.bin")["ContentLength"] == 11 * 1024 * 1024
    aborted = ObjectWriter(
        s3, BUCKET, "outbox/test/aborted.bin", "application/octet-stream", part_bytes=5 * 1024 * 1024
    )
    for _ in range(6):
        aborted.write(block)
    aborted.abort()
    assert "outbox/test/aborted.bin" not in _keys(s3, "outbox/test/")
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_url_encoded_keys_and_s3_test_events(batch, s3):
    _, _, drop, s3_batch = batch("digits")
    drop("my file (1).jsonl", json.dumps(PIXELS[0].tolist()).encode())
    assert "outbox/digits/my file (1).jsonl" in _keys(s3, "outbox/digits/")
    test_event = {
        "Records": [
            {
                "messageId": "t-1",
                "receiptHandle": "r",
                "body": json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET}),
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:q",
                "awsRegion": "us-east-1",
            }
        ]
    }
    assert s3_batch.lambda_handler(test_event, LocalContext()) == {"batchItemFailures": []}

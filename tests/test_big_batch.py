"""Big batch files: the batch function's hand-off to the state machine, and its two steps in it
(score a batch of items into a part; assemble the parts), checked against the small path's output
for the same rows. The items are formed here as a Distributed Map forms them; the state machine
itself runs in tests/serve/test_big_batch_serve.py."""

from __future__ import annotations

import csv
import io
import json

import boto3
import numpy as np
import pytest
from sklearn.datasets import load_digits

from contract import big_batch
from handlers.runtime.aws import reset_clients
from onnxfn.local.context import LocalContext
from tests.conftest import BUCKET

PIXELS = load_digits().data[:300].astype(np.float32)
ROLE = "arn:aws:iam::123456789012:role/states"


@pytest.fixture
def state_machine(aws):
    states = boto3.client("stepfunctions", region_name="us-east-1")
    definition = {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}
    arn = states.create_state_machine(
        name=f"big-{len(states.list_state_machines()['stateMachines'])}",
        definition=json.dumps(definition),
        roleArn=ROLE,
    )["stateMachineArn"]
    reset_clients()
    yield states, arn
    reset_clients()


@pytest.fixture
def handler(serve, s3, monkeypatch):
    """The batch handler serving digits, with the hand-off configured by ``extra``."""

    def _open(extra: dict[str, str] | None = None):
        served = serve("digits")
        for key, value in {**served.environment, "DATA_BUCKET": BUCKET, **(extra or {})}.items():
            monkeypatch.setenv(key, value)
        from handlers import s3_batch

        return lambda event, timeout_s=300.0: s3_batch.lambda_handler(event, LocalContext(timeout_s=timeout_s))

    return _open


def _notification(key: str, version: str, size: int) -> dict:
    record = {"s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "versionId": version, "size": size}}}
    body = json.dumps({"Records": [record]})
    return {
        "Records": [{"messageId": key, "body": body, "receiptHandle": "r", "attributes": {}, "eventSource": "aws:sqs"}]
    }


def _put(s3, key: str, body: bytes) -> str:
    return s3.put_object(Bucket=BUCKET, Key=key, Body=body)["VersionId"]


def _jsonl(rows: int, bad: tuple[int, ...] = ()) -> bytes:
    """Digits rows; the ``bad`` ones valid JSON the model refuses (a line that is not JSON fails the
    Map's reader as a whole: tests/serve/test_big_batch_serve.py)."""
    lines = [json.dumps({"bad": i} if i in bad else PIXELS[i % len(PIXELS)].tolist()) for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def _items(body: bytes, fmt: str) -> list[dict]:
    """The items a Distributed Map reads: every non-blank line, parsed (CSV with the given headers)."""
    lines = [line for line in body.decode().splitlines() if line.strip()]
    if fmt == "csv":  # given one header more than digits' 64 columns; short rows padded, long ones cut
        headers = big_batch.csv_headers(65)
        values = [dict(zip(headers, (cells + [""] * 65)[:65], strict=True)) for cells in csv.reader(lines)]
    else:
        values = [json.loads(line) for line in lines]
    return [{big_batch.INDEX: i, big_batch.ROW: v} for i, v in enumerate(values)]


def _run(invoke, key: str, version: str, fmt: str, body: bytes, size: int, skip: tuple[int, ...] = (), failure=None):
    run = {
        "run": big_batch.execution_name(key, version),
        "bucket": BUCKET,
        "key": key,
        "version": version,
        "format": fmt,
    }
    items = _items(body, fmt)
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    counts = [invoke({"Items": b, "BatchInput": run}) for n, b in enumerate(batches) if n not in skip]
    payload = {"assemble": {**run, **({"failure": failure} if failure else {})}}
    return counts, invoke(payload)


def _get(s3, key):
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _small_path(invoke, s3, name: str, body: bytes):
    key = f"inbox/digits/{name}"
    version = _put(s3, key, body)
    invoke(_notification(key, version, len(body)))
    return _get(s3, f"outbox/digits/{name}"), json.loads(_get(s3, f"outbox/digits/{name}.summary.json"))


def test_a_big_file_is_handed_off_once_per_version_and_a_small_one_is_scored_here(handler, s3, state_machine):
    states, arn = state_machine
    invoke = handler({"BIG_BATCH_STATE_MACHINE": arn, "BIG_BATCH_ROWS": "100"})
    key = "inbox/digits/handoff.jsonl"
    body = _jsonl(150)
    version = _put(s3, key, body)
    assert invoke(_notification(key, version, len(body))) == {"batchItemFailures": []}
    assert invoke(_notification(key, version, len(body))) == {"batchItemFailures": []}  # S3 delivers twice
    executions = states.list_executions(stateMachineArn=arn)["executions"]
    assert [e["name"] for e in executions] == [big_batch.execution_name(key, version)]
    started = json.loads(states.describe_execution(executionArn=executions[0]["executionArn"])["input"])
    assert started == {
        "run": executions[0]["name"],
        "bucket": BUCKET,
        "key": key,
        "version": version,
        "source_version": version,
        "format": "jsonl",
    }
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="outbox/digits/handoff.jsonl")
    # A new version of the same key is a new execution; a file under the threshold stays on the small path.
    version2 = _put(s3, key, body)
    invoke(_notification(key, version2, len(body)))
    assert len(states.list_executions(stateMachineArn=arn)["executions"]) == 2
    small = _jsonl(20)
    out, summary = _small_path(invoke, s3, "small.jsonl", small)
    assert summary["scored"] == 20 and summary["execution"] is None and len(out.splitlines()) == 20


def test_without_a_threshold_the_throughput_measured_on_the_sample_decides(handler, s3, state_machine):
    states, arn = state_machine
    invoke = handler({"BIG_BATCH_STATE_MACHINE": arn})
    body = _jsonl(1500)
    key = "inbox/digits/measured.jsonl"
    version = _put(s3, key, body)
    # 1,500 rows fit easily in 300 s: scored here.
    invoke(_notification(key, version, len(body)), 300.0)
    assert json.loads(_get(s3, "outbox/digits/measured.jsonl.summary.json"))["scored"] == 1500
    assert states.list_executions(stateMachineArn=arn)["executions"] == []
    # The same rows with the invocation's time nearly spent: handed off.
    key2 = "inbox/digits/measured-late.jsonl"
    version2 = _put(s3, key2, body)
    invoke(_notification(key2, version2, len(body)), 1.0)
    assert [e["name"] for e in states.list_executions(stateMachineArn=arn)["executions"]] == [
        big_batch.execution_name(key2, version2)
    ]
    # Under 1,000 records nothing is measured: scored here, however little time is left.
    key3 = "inbox/digits/measured-small.jsonl"
    small = _jsonl(999)
    invoke(_notification(key3, _put(s3, key3, small), len(small)), 1.0)
    assert json.loads(_get(s3, "outbox/digits/measured-small.jsonl.summary.json"))["scored"] == 999


def test_npy_files_stay_on_the_small_path_whatever_their_size(handler, s3, state_machine):
    _, arn = state_machine
    invoke = handler({"BIG_BATCH_STATE_MACHINE": arn, "BIG_BATCH_ROWS": "1", "BIG_BATCH_BYTES": "1"})
    buffer = io.BytesIO()
    np.save(buffer, PIXELS[:5])
    key = "inbox/digits/tensors.npy"
    invoke(_notification(key, _put(s3, key, buffer.getvalue()), len(buffer.getvalue())))
    assert json.loads(_get(s3, "outbox/digits/tensors.npy.summary.json"))["scored"] == 5


def test_parts_assemble_into_exactly_the_small_paths_output(handler, s3):
    invoke = handler()
    body = _jsonl(257, bad=(3, 100))
    small_out, small_summary = _small_path(invoke, s3, "same-small.jsonl", body)
    key = "inbox/digits/same-big.jsonl"
    version = _put(s3, key, body)
    counts, summary = _run(invoke, key, version, "jsonl", body, size=40)
    assert [c["first"] for c in counts] == list(range(0, 257, 40))
    assert _get(s3, "outbox/digits/same-big.jsonl") == small_out
    for field in ("records_in", "scored", "failed"):
        assert summary[field] == small_summary[field]
    assert summary["records_in"] == 257 and summary["failed"] == 2
    assert summary["execution"] == big_batch.execution_name(key, version)
    errors = [json.loads(line) for line in _get(s3, "outbox/digits/same-big.jsonl.errors.jsonl").splitlines()]
    assert [e["line"] for e in errors] == [4, 101]
    stored = json.loads(_get(s3, "outbox/digits/same-big.jsonl.summary.json"))
    assert stored == summary
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="outbox/digits/.parts/")  # parts removed
    # a record the model refuses gets the small path's message
    small_errors = _get(s3, "outbox/digits/same-small.jsonl.errors.jsonl")
    assert _get(s3, "outbox/digits/same-big.jsonl.errors.jsonl") == small_errors


def test_a_failed_batch_is_counted_line_by_line_and_a_retried_one_once(handler, s3):
    invoke = handler()
    body = _jsonl(100)
    key = "inbox/digits/gaps.jsonl"
    version = _put(s3, key, body)
    run = {
        "run": big_batch.execution_name(key, version),
        "bucket": BUCKET,
        "key": key,
        "version": version,
        "format": "jsonl",
    }
    items = _items(body, "jsonl")
    invoke({"Items": items[:30], "BatchInput": run})
    invoke({"Items": items[:30], "BatchInput": run})  # a retried child writes the same part
    invoke({"Items": items[60:90], "BatchInput": run})  # 30..59 and 90..99 never scored
    part = f"outbox/digits/.parts/{run['run']}/000000000060.out"
    tags = s3.get_object_tagging(Bucket=BUCKET, Key=part)["TagSet"]
    assert tags == [{"Key": "onnxfn-part", "Value": "true"}]  # expired by the bucket if never assembled
    summary = invoke({"assemble": run})
    assert (summary["records_in"], summary["scored"], summary["failed"]) == (100, 60, 40)
    errors = [json.loads(line) for line in _get(s3, "outbox/digits/gaps.jsonl.errors.jsonl").splitlines()]
    assert [e["line"] for e in errors] == [*range(31, 61), *range(91, 101)]
    assert all("batch failed" in e["error"] for e in errors)
    output = [json.loads(line)["line"] for line in _get(s3, "outbox/digits/gaps.jsonl").splitlines()]
    assert output == [*range(1, 31), *range(61, 91)]
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"outbox/digits/.parts/{run['run']}/")
    # Assembling again (a redelivered last step) finds the output and changes nothing.
    assert invoke({"assemble": run})["duplicate"] is True


def test_csv_with_and_without_a_header_matches_the_small_path(handler, s3):
    invoke = handler()
    rows = "\n".join(",".join(f"{v:g}" for v in PIXELS[i]) for i in range(90)) + "\n"
    for name, body in (
        ("plain.csv", rows.encode()),
        ("header.csv", (",".join(f"p{i}" for i in range(64)) + "\n" + rows).encode()),
    ):
        small_out, small_summary = _small_path(invoke, s3, f"small-{name}", body)
        key = f"inbox/digits/big-{name}"
        _, summary = _run(invoke, key, _put(s3, key, body), "csv", body, size=25)
        assert _get(s3, f"outbox/digits/big-{name}") == small_out
        assert (
            (summary["records_in"], summary["scored"])
            == (small_summary["records_in"], small_summary["scored"])
            == (90, 90)
        )


def test_a_failed_map_leaves_no_output_and_counts_every_record_failed(handler, s3):
    invoke = handler()
    body = _jsonl(50)
    key = "inbox/digits/failed.jsonl"
    failure = {"Error": "States.ExceedToleratedFailureThreshold", "Cause": "3 of 5 batches failed"}
    _, summary = _run(invoke, key, _put(s3, key, body), "jsonl", body, size=10, skip=(0, 1, 2), failure=failure)
    assert (summary["records_in"], summary["scored"], summary["failed"]) == (50, 0, 50)
    assert summary["output_key"] is None
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="outbox/digits/failed.jsonl")["Contents"]
    assert sorted(o["Key"] for o in listed) == [
        "outbox/digits/failed.jsonl.errors.jsonl",
        "outbox/digits/failed.jsonl.summary.json",
    ]  # no output
    errors = [json.loads(line) for line in _get(s3, "outbox/digits/failed.jsonl.errors.jsonl").splitlines()]
    assert errors == [
        {
            "line": 0,
            "error": "the Distributed Map failed: States.ExceedToleratedFailureThreshold: 3 of 5 batches failed",
        }
    ]


GOOD_RUN = {"run": "r1", "bucket": BUCKET, "key": "inbox/digits/x.jsonl", "version": None, "format": "jsonl"}


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"Items": [], "BatchInput": GOOD_RUN}, "a non-empty list"),
        ({"Items": "rows", "BatchInput": GOOD_RUN}, "a non-empty list"),
        ({"Items": [{"row": [1]}], "BatchInput": GOOD_RUN}, r"Items\[0\]: expected"),
        ({"Items": [{"index": 4, "row": []}, {"index": 6, "row": []}], "BatchInput": GOOD_RUN}, "does not follow 4"),
        ({"Items": [{"index": 0, "row": []}], "BatchInput": "run"}, "expected the run as an object"),
        ({"Items": [{"index": 0, "row": []}], "BatchInput": {**GOOD_RUN, "format": "npy"}}, "format 'npy'"),
        ({"Items": [{"index": 0, "row": []}], "BatchInput": {"run": "r1"}}, "the run lacks bucket, key, format"),
        ({"assemble": "x"}, "expected the run as an object"),
        ({"assemble": {**GOOD_RUN, "key": "inbox/minilm/x.jsonl"}}, "expected a file under inbox/digits/"),
        ({"assemble": {**GOOD_RUN, "bucket": "elsewhere"}}, "expected a file under inbox/digits/"),
    ],
)
def test_a_malformed_step_is_a_clear_error(handler, s3, event, message):
    from handlers.runtime.errors import InvalidInput

    invoke = handler()
    with pytest.raises(InvalidInput, match=message):
        invoke(event)


def test_a_file_whose_sample_is_not_all_json_stays_on_the_small_path(handler, s3, state_machine):
    states, arn = state_machine
    invoke = handler({"BIG_BATCH_STATE_MACHINE": arn, "BIG_BATCH_ROWS": "10"})
    key = "inbox/digits/not-all-json.jsonl"
    body = _jsonl(50).replace(b"\n", b"\n{not json\n", 1)
    invoke(_notification(key, _put(s3, key, body), len(body)))
    assert states.list_executions(stateMachineArn=arn)["executions"] == []
    summary = json.loads(_get(s3, "outbox/digits/not-all-json.jsonl.summary.json"))
    assert (summary["records_in"], summary["scored"], summary["failed"]) == (51, 50, 1)

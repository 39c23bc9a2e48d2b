"""Big batch files under ``onnxfn serve``: the batch function hands a file to its state machine, which
``serve`` runs from the synthesized definition (Distributed Map reading the file from moto's S3,
batches on the local batch workers, assembly), and ``onnxfn invoke file`` shows its progress.

The app is synthesized with ``-c onnxfn:big_batch_rows=1000``, so a file of 1,000 records or more
takes the state machine; the 200,000-line run lives in ``make big-batch``."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from contract import big_batch
from tests.serve.conftest import ONNXFN, ROOT

PIXELS = load_digits().data.astype(np.float32)
THRESHOLD = 1000


@pytest.fixture(scope="module")
def big_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxfn.local.synth import synthesize

    out = tmp_path_factory.mktemp("big-assembly") / "cdk.out"
    synthesize(ROOT, out, {"onnxfn:big_batch_rows": str(THRESHOLD)})
    return out


@pytest.fixture(scope="module")
def served(big_assembly, tmp_path_factory):
    from tests.serve.conftest import _serve

    with _serve(big_assembly, tmp_path_factory.mktemp("big-served"), ["--concurrency", "2"]) as app:
        yield app


def _jsonl(rows: range, bad: tuple[int, ...] = ()) -> bytes:
    lines = [json.dumps({"bad": True}) if i in bad else json.dumps(PIXELS[i % len(PIXELS)].tolist()) for i in rows]
    return ("\n".join(lines) + "\n").encode()


def _drop(served, tmp_path: Path, name: str, body: bytes):
    path = tmp_path / name
    path.write_bytes(body)
    client = served.client
    key, version = client.put_batch_file("digits", path)
    summary = client.wait_for_batch("digits", key, timeout_s=240)
    assert summary is not None, served.output()[-3000:]
    return key, version, summary


def _object(served, key: str) -> bytes:
    bucket = served.client.model("digits")["bucket"]
    return bytes(served.client.aws("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def test_a_big_json_lines_file_runs_on_the_state_machine_and_matches_the_small_path(served, tmp_path):
    rows = 4321
    body = _jsonl(range(rows), bad=(7, 2500))
    key, version, summary = _drop(served, tmp_path, "big.jsonl", body)
    assert summary["execution"] == big_batch.execution_name(key, summary["source_version"])
    counts = (summary["records_in"], summary["scored"], summary["failed"])
    assert counts == (rows, rows - 2, 2), _object(served, summary["errors_key"])[:2000]
    # The same first 999 rows, under the threshold, go the small path: the same lines come out.
    _, _, small = _drop(served, tmp_path, "small.jsonl", _jsonl(range(999), bad=(7,)))
    assert small["execution"] is None and small["records_in"] == 999
    big_lines = _object(served, summary["output_key"]).splitlines()
    small_lines = _object(served, small["output_key"]).splitlines()
    assert big_lines[: len(small_lines)] == small_lines
    errors = [json.loads(x) for x in _object(served, summary["errors_key"]).splitlines()]
    assert [e["line"] for e in errors] == [8, 2501]
    # moto says what AWS would: the execution succeeded; the run's progress was written as it went.
    states = served.client.aws("stepfunctions")
    arn = served.client.model("digits")["state_machine_arn"]
    (execution,) = [
        e for e in states.list_executions(stateMachineArn=arn)["executions"] if e["name"] == summary["execution"]
    ]
    assert states.describe_execution(executionArn=execution["executionArn"])["status"] == "SUCCEEDED"
    report = served.client.execution_progress(key, version)
    (run,) = report["maps"]
    assert run["items"] == rows and run["done"] == run["batches"] >= rows // big_batch.DEFAULT_ITEMS_PER_BATCH
    assert run["failed"] == 0 and run["finished"]
    # serve's console says how the execution ended
    deadline = time.monotonic() + 10
    while summary["execution"] not in served.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    (said,) = [line for line in served.output().splitlines() if summary["execution"] in line]
    assert "SUCCEEDED" in said and f"{rows:,} records read" in said and "(0 failed)" in said
    # no part is left behind
    bucket = served.client.model("digits")["bucket"]
    assert "Contents" not in served.client.aws("s3").list_objects_v2(Bucket=bucket, Prefix="outbox/digits/.parts/")


def test_a_big_csv_file_with_a_header_runs_on_the_state_machine(served, tmp_path):
    header = ",".join(f"p{i}" for i in range(64))
    lines = [",".join(f"{v:g}" for v in PIXELS[i % len(PIXELS)]) for i in range(1500)]
    key, _, summary = _drop(served, tmp_path, "big.csv", ("\n".join([header, *lines]) + "\n").encode())
    assert summary["execution"] is not None and (summary["records_in"], summary["scored"]) == (1500, 1500)
    _, _, small = _drop(served, tmp_path, "small.csv", ("\n".join([header, *lines[:900]]) + "\n").encode())
    assert small["execution"] is None
    big_out = _object(served, summary["output_key"]).splitlines()
    small_out = _object(served, small["output_key"]).splitlines()
    assert big_out[0].startswith(b"line,label,")  # the header, written once
    assert big_out[: len(small_out)] == small_out and len(big_out) == 1501


def test_a_file_the_map_cannot_read_fails_whole_is_summarized_and_dead_lettered(served, tmp_path):
    # a line that is not JSON past the first MiB (the batch function's sample keeps a file whose
    # sample holds one on the small path): Step Functions' reader fails the whole Map
    lines = _jsonl(range(6000)).splitlines()
    assert sum(len(line) + 1 for line in lines[:5500]) > 1024 * 1024
    body = b"\n".join([*lines[:5500], b"{not json", *lines[5500:]]) + b"\n"
    key, version, summary = _drop(served, tmp_path, "unreadable.jsonl", body)
    assert (summary["records_in"], summary["scored"], summary["failed"]) == (6001, 0, 6001)
    assert summary["output_key"] is None
    (error,) = [json.loads(x) for x in _object(served, summary["errors_key"]).splitlines()]
    assert error["line"] == 0 and "States.ItemReaderFailed" in error["error"]
    states = served.client.aws("stepfunctions")
    name = big_batch.execution_name(key, summary["source_version"])
    arn = served.client.model("digits")["state_machine_arn"]
    deadline = time.monotonic() + 30
    status = "RUNNING"
    while status == "RUNNING" and time.monotonic() < deadline:
        (execution,) = [e for e in states.list_executions(stateMachineArn=arn)["executions"] if e["name"] == name]
        status = states.describe_execution(executionArn=execution["executionArn"])["status"]
        time.sleep(0.2)
    assert status == "FAILED"
    sqs = served.client.aws("sqs")
    queue = served.client.model("digits")["failed_executions_url"]
    messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5, MaxNumberOfMessages=10).get("Messages", [])
    events = [json.loads(m["Body"]) for m in messages]
    assert any(e["detail"]["name"] == name and e["detail"]["status"] == "FAILED" for e in events)
    assert any(name in line and "FAILED" in line for line in served.output().splitlines())


def test_invoke_file_shows_the_state_machines_progress(served, tmp_path):
    path = tmp_path / "progress.jsonl"
    path.write_bytes(_jsonl(range(3000)))
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run(
        [str(ONNXFN), "invoke", "--state-file", str(served.state_file), "file", "digits", str(path), "--wait", "240"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["scored"] == 3000 and summary["execution"]
    assert "state machine" in result.stderr and "records read" in result.stderr

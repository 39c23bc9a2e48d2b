"""Crashes, exceptions, timeouts, malformed responses and partial batch failures under
``onnxfn serve``: each answered as API Gateway and Lambda answer it, and the next request works."""

from __future__ import annotations

import base64
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.serve import faulty_app
from tests.serve.conftest import _serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    app_dir = faulty_app.build(tmp_path_factory.mktemp("faulty") / "cdk.out")
    args = ["--concurrency", "2", "--integration-timeout", "4", "--retry-after", "0", "--api-key", "k"]
    with _serve(app_dir, tmp_path_factory.mktemp("faulty-serve"), args) as served:
        yield served


def _get(served, path, **kwargs):
    return requests.get(f"{served.url}{path}", timeout=30, **kwargs)


def test_event_environment_and_lifecycle_come_from_the_template(faulty):
    first = _get(faulty, "/things/1").json()
    second = _get(faulty, "/things/2").json()
    assert first["memory"] == str(faulty_app.MEMORY_MB)
    assert first["function"] == faulty.state["functions"]["Fn"]["name"]
    assert 0 < first["remaining_ms"] <= faulty_app.TIMEOUT_S * 1000
    assert first["resource"] == "/{proxy+}" and first["path_parameters"] == {"proxy": "things/1"}
    assert first["stage"] == "test"
    assert first["bucket"] == faulty.state["buckets"]["Data"]
    assert first["queue_url"] == faulty.state["queues"]["Jobs"]
    assert first["queue_arn"].endswith(":" + first["queue_url"].rsplit("/", 1)[-1])
    assert second["pid"] == first["pid"], "a warm worker is reused"
    assert second["tmp_reused"], "/tmp survives between invocations of one worker"
    assert first["tmp"] != "/tmp" and first["tmp"].startswith("/")
    assert first["request_id"] != second["request_id"]


def test_path_parameters_and_api_key_on_a_keyed_route(faulty):
    assert _get(faulty, "/items/42").status_code == 403
    reply = _get(faulty, "/items/42", headers={"x-api-key": "k"}).json()
    assert reply["resource"] == "/items/{id}" and reply["path_parameters"] == {"id": "42"}
    assert _get(faulty, "/test/items/42", headers={"x-api-key": "k"}).json()["path_parameters"] == {"id": "42"}


def test_crash_answers_502_and_the_next_request_gets_a_new_worker(faulty):
    before = _get(faulty, "/ok").json()["pid"]
    crashed = requests.post(f"{faulty.url}/crash", timeout=30)
    assert (crashed.status_code, crashed.json()) == (502, {"message": "Internal server error"})
    assert before not in faulty.workers(), "the crashed worker (the warm one, reused first) is gone"
    after = _get(faulty, "/ok")
    assert after.status_code == 200 and after.json()["pid"] != before


def test_handler_exception_answers_502_without_traceback_and_worker_survives(faulty):
    pid = _get(faulty, "/ok").json()["pid"]
    raised = _get(faulty, "/raise")
    assert raised.status_code == 502
    assert raised.json() == {"message": "Internal server error"} and "Traceback" not in raised.text
    assert pid in faulty.workers()
    assert "the handler raised" in faulty.output()  # the function's log, as in CloudWatch Logs


def test_malformed_proxy_response_answers_502(faulty):
    assert _get(faulty, "/malformed").status_code == 502


def test_timeout_kills_the_worker_and_a_fresh_one_serves_the_next_request(faulty):
    pid = _get(faulty, "/ok").json()["pid"]
    started = time.monotonic()
    timed_out = _get(faulty, "/sleep", params={"s": "6"})
    elapsed = time.monotonic() - started
    assert timed_out.status_code == 502
    assert faulty_app.TIMEOUT_S - 0.2 <= elapsed < faulty_app.TIMEOUT_S + 3
    assert pid not in faulty.workers(), "the timed-out worker was killed"
    reply = _get(faulty, "/ok")
    assert reply.status_code == 200 and reply.json()["pid"] != pid
    assert "Task timed out after 2.00 seconds" in faulty.output()


def test_integration_timeout_answers_504(faulty):
    started = time.monotonic()
    reply = _get(faulty, "/slow", params={"s": "6"})
    assert (reply.status_code, reply.json()) == (504, {"message": "Endpoint request timed out"})
    assert 3.8 <= time.monotonic() - started < 5.5  # --integration-timeout 4
    assert _get(faulty, "/slow", params={"s": "0"}).status_code == 200


def test_concurrent_requests_run_in_separate_workers(faulty):
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: _get(faulty, "/sleep", params={"s": "0.5"}).json(), range(4)))
    assert len({r["pid"] for r in replies}) == 2  # --concurrency 2
    assert len({r["tmp"] for r in replies}) == 2  # each worker has its own /tmp


def test_binary_media_type_is_base64_encoded_and_decoded(faulty):
    payload = bytes(range(256)) * 4
    reply = requests.post(
        f"{faulty.url}/echo", data=payload, headers={"Content-Type": "application/octet-stream"}, timeout=30
    )
    assert reply.status_code == 200 and reply.content == payload
    text = requests.post(
        f"{faulty.url}/echo", data=b'{"a": 1}', headers={"Content-Type": "application/json"}, timeout=30
    )
    assert text.content == b'{"a": 1}'
    assert base64.b64encode(payload)  # the event carried base64 (isBase64Encoded), the client saw bytes


def test_oversized_request_is_refused_with_413(faulty):
    # no gateway responses in this app: API Gateway's built-in answer
    reply = requests.post(f"{faulty.url}/echo", data=b"x" * (7 * 1024 * 1024), timeout=60)
    assert reply.status_code == 413 and reply.json() == {"message": "Request Too Long"}


def test_partial_batch_failures_are_redriven_and_the_rest_deleted(faulty):
    sqs = faulty.client.aws("sqs")
    jobs, dead = faulty.state["queues"]["Jobs"], faulty.state["queues"]["Dead"]
    sent = {body: sqs.send_message(QueueUrl=jobs, MessageBody=body)["MessageId"] for body in ("ok-1", "fail", "ok-2")}
    moved = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not moved:
        moved = sqs.receive_message(QueueUrl=dead, WaitTimeSeconds=1).get("Messages", [])
    assert [m["MessageId"] for m in moved] == [sent["fail"]]
    attributes = sqs.get_queue_attributes(QueueUrl=jobs, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    done = [int(n) for n in re.findall(r"SQS → Faulty-Fn: \d+ message\(s\), (\d+) done", faulty.output())]
    assert sum(done) >= 2  # ok-1 and ok-2 deleted after their batch succeeded


def test_crash_during_a_batch_leaves_the_messages_for_redelivery(faulty):
    sqs = faulty.client.aws("sqs")
    jobs, dead = faulty.state["queues"]["Jobs"], faulty.state["queues"]["Dead"]
    crash_id = sqs.send_message(QueueUrl=jobs, MessageBody="crash")["MessageId"]
    moved = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not moved:
        moved = sqs.receive_message(QueueUrl=dead, WaitTimeSeconds=1).get("Messages", [])
    assert [m["MessageId"] for m in moved] == [crash_id]
    assert _get(faulty, "/ok").status_code == 200


def test_the_function_runs_on_its_runtimes_interpreter_with_nothing_from_the_venv(faulty):
    """python3.12 (the template's Runtime), the staged code first on the path, no bytecode written,
    and not one module from the development venv."""
    import sys
    from pathlib import Path

    inside = _get(faulty, "/runtime").json()
    assert inside["version"][:2] == [3, 12]
    assert inside["executable"] != sys.executable
    assert inside["dont_write_bytecode"] is True
    code_dir = Path(faulty.state["assembly"]) / f"asset.{faulty_app.ASSET}"
    assert inside["path"][0] == str(code_dir.resolve())
    venv = str(Path(sys.prefix).resolve())
    assert not [p for p in inside["path"] if p.startswith(venv)]
    assert not [m for m in inside["modules"] if m.startswith(venv)]
    assert "site-packages" not in " ".join(inside["path"])  # no layer here, and not the interpreter's own
    assert not list(code_dir.rglob("__pycache__"))


def test_each_worker_is_held_to_its_memorys_cpu_share_after_init(faulty):
    """A cgroup v1 CPU quota of memory/1,769 vCPU per execution environment, joined after init."""
    from pathlib import Path

    inside = _get(faulty, "/runtime").json()
    line = next(entry for entry in inside["cgroup"].splitlines() if ":cpu," in entry or ":cpu:" in entry)
    folder = Path("/sys/fs/cgroup/cpu") / line.split(":", 2)[2].lstrip("/")
    assert re.fullmatch(rf"{faulty.process.pid}-Fn-\d+", folder.name)  # one per execution environment
    assert str(inside["pid"]) in (folder / "cgroup.procs").read_text().split()
    period = int((folder / "cpu.cfs_period_us").read_text())
    quota = int((folder / "cpu.cfs_quota_us").read_text())
    assert quota / period == pytest.approx(faulty_app.MEMORY_MB / 1769, abs=0.001)
    assert faulty.state["functions"]["Fn"]["cpu_enforced"] is True
    assert faulty.state["functions"]["Fn"]["faithful"] is True

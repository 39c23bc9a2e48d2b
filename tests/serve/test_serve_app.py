"""The real app under ``onnxfn serve``: real clients over HTTP, batch files and queues through moto."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import boto3
import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_digits

from tests.conftest import artifact
from tests.reference import digits_direct, minilm_direct
from tests.serve.conftest import ONNXFN, ROOT

pytestmark = pytest.mark.slow
KEY = {"x-api-key": "test-key"}
SENTENCES = ["Serverless inference with ONNX.", "A dog runs across the field.", "Quantized weights are int8."]


def _digits_request(pixels: np.ndarray) -> dict:
    return {"inputs": [{"name": "pixels", "shape": list(pixels.shape), "datatype": "FP32", "data": pixels.tolist()}]}


def test_state_file_describes_the_running_app(served_app):
    state = served_app.state
    assert stat.S_IMODE(os.stat(served_app.state_file).st_mode) == 0o600  # it holds the API key
    assert state["api_key"] == "test-key"
    assert state["url"].startswith("http://127.0.0.1:")
    assert state["aws_endpoint"].startswith("http://127.0.0.1:")
    assert set(state["models"]) == {"digits", "minilm"}
    for entry in state["models"].values():
        assert set(entry["functions"]) == {"api", "batch", "worker"}
        assert entry["requests_queue_url"].startswith(state["aws_endpoint"])
        assert entry["inbox_prefix"].startswith("inbox/")
    s3 = served_app.client.aws("s3")
    for entry in state["models"].values():  # each function reads the manifest version the upload made
        head = s3.head_object(Bucket=entry["bucket"], Key=f"{entry['model_prefix']}manifest.json")
        assert entry["manifest_version_id"] == head["VersionId"] not in ("", "null")
    sqs = served_app.client.aws("sqs")
    urls = sqs.list_queues()["QueueUrls"]
    assert state["models"]["digits"]["requests_dead_letter_url"] in urls
    assert len(state["functions"]) == 6


def test_api_key_stage_prefix_and_unknown_routes_as_the_templates_gateway_responses(served_app):
    url = served_app.url
    assert requests.get(f"{url}/v2/models/digits", headers=KEY, timeout=60).status_code == 200
    missing = requests.get(f"{url}/v2/models/digits", timeout=10)
    assert missing.status_code == 403 and "x-api-key" in missing.json()["error"]
    assert missing.headers["x-amzn-ErrorType"] == "ForbiddenException"
    wrong = requests.get(f"{url}/v2/models/digits", headers={"x-api-key": "nope"}, timeout=10)
    assert wrong.status_code == 403 and set(wrong.json()) == {"error"}
    for path in ("/v2/models/resnet/infer", "/v1/models/resnet:predict", "/v3/anything"):
        unknown = requests.post(f"{url}{path}", headers=KEY, json={"inputs": []}, timeout=10)
        assert unknown.status_code == 404, (path, unknown.text)
        message = unknown.json()["error"]
        assert "digits" in message and "minilm" in message and "/v2/models/<name>/infer" in message
    wrong_method = requests.get(f"{url}/v1/models/digits:predict", headers=KEY, timeout=10)
    assert wrong_method.status_code == 404
    staged = requests.get(f"{url}/prod/v2/models/minilm", headers=KEY, timeout=60)
    assert staged.status_code == 200 and staged.json()["name"] == "minilm"
    assert staged.headers["x-amzn-RequestId"]


def test_digits_over_http_matches_onnxruntime(served_app):
    pixels = load_digits().data[:10].astype(np.float32)
    reply = requests.post(
        f"{served_app.url}/v2/models/digits/infer", json=_digits_request(pixels), headers=KEY, timeout=60
    )
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    labels, probabilities = digits_direct(artifact("digits"), pixels)
    np.testing.assert_array_equal(outputs["label"]["data"], labels)
    np.testing.assert_allclose(np.array(outputs["probabilities"]["data"]).reshape(10, 10), probabilities, atol=1e-6)
    bad = requests.post(f"{served_app.url}/v2/models/digits/infer", data=b"{not json", headers=KEY, timeout=60)
    assert bad.status_code == 400 and "error" in bad.json()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_against_serve(served_app, binary):
    client = httpclient.InferenceServerClient(url=served_app.host_port)
    try:
        assert client.is_server_live(headers=dict(KEY))
        assert client.is_model_ready("digits", headers=dict(KEY))
        pixels = load_digits().data[20:24].astype(np.float32)
        tensor = httpclient.InferInput("pixels", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels, binary_data=binary)
        result = client.infer(
            "digits",
            [tensor],
            outputs=[httpclient.InferRequestedOutput("label", binary_data=binary)],
            headers=dict(KEY),  # tritonclient adds its own headers to the dict it gets
        )
        np.testing.assert_array_equal(result.as_numpy("label"), digits_direct(artifact("digits"), pixels)[0])
        texts = np.array([s.encode() for s in SENTENCES], dtype=np.object_)
        text = httpclient.InferInput("text", [len(SENTENCES)], "BYTES")
        text.set_data_from_numpy(texts, binary_data=binary)
        embedded = client.infer(
            "minilm",
            [text],
            outputs=[httpclient.InferRequestedOutput("embedding", binary_data=binary)],
            headers=dict(KEY),
        )
    finally:
        client.close()
    expected = minilm_direct(artifact("minilm"), SENTENCES)
    np.testing.assert_allclose(embedded.as_numpy("embedding"), expected, atol=1e-4)


def test_v1_predict_over_http(served_app):
    reply = requests.post(
        f"{served_app.url}/v1/models/minilm:predict", json={"instances": SENTENCES[:2]}, headers=KEY, timeout=60
    )
    assert reply.status_code == 200, reply.text
    vectors = np.array(reply.json()["predictions"])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_batch_file_through_s3_notification_and_queue(served_app, tmp_path):
    pixels = load_digits().data[:50].astype(np.float32)
    lines = [json.dumps({"pixels": row.tolist()}) for row in pixels]
    lines.insert(7, '{"pixels": [1, 2, 3]}')  # wrong shape: reported, the others scored
    path = tmp_path / "scan-0001.jsonl"
    path.write_text("\n".join(lines) + "\n")
    key = served_app.client.put_file("digits", path)
    summary = served_app.client.wait_for_batch("digits", key, timeout_s=90)
    assert summary is not None, served_app.output()[-3000:]
    assert (summary["scored"], summary["failed"]) == (50, 1)
    entry = served_app.client.model("digits")
    s3 = served_app.client.aws("s3")
    output = s3.get_object(Bucket=entry["bucket"], Key=summary["output_key"])["Body"].read().decode()
    predicted = [json.loads(line)["label"] for line in output.splitlines()]
    np.testing.assert_array_equal(predicted, digits_direct(artifact("digits"), pixels)[0])
    errors = s3.get_object(Bucket=entry["bucket"], Key=summary["errors_key"])["Body"].read().decode()
    assert json.loads(errors.splitlines()[0])["line"] == 8


def test_queue_message_answered_and_a_bad_one_answered_once_not_redriven(served_app):
    client = served_app.client
    pixels = load_digits().data[:2].astype(np.float32)
    message_id = client.send_message("digits", json.dumps(_digits_request(pixels)))
    result = client.wait_for_result("digits", message_id, timeout_s=60)
    assert result is not None and result[0], result
    labels = next(o for o in result[1]["outputs"] if o["name"] == "label")["data"]
    np.testing.assert_array_equal(labels, digits_direct(artifact("digits"), pixels)[0])

    bad_id = client.send_message("digits", json.dumps({"inputs": [{"name": "nope", "shape": [1], "datatype": "FP32"}]}))
    failure = client.wait_for_result("digits", bad_id, timeout_s=60)
    assert failure is not None and not failure[0] and "nope" in json.dumps(failure[1])
    assert failure[1]["retried"] is False  # it can never succeed: answered once, deleted
    dlq = client.model("digits")["requests_dead_letter_url"]
    queue = client.model("digits")["requests_queue_url"]
    sqs = client.aws("sqs")
    # With --retry-after 1 and maxReceiveCount 3, a redriven message would reach the DLQ within seconds.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", []) == []
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (
        attributes["ApproximateNumberOfMessages"] == "0" and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    )


def test_prometheus_metrics_from_gateway_and_handlers(served_app):
    for _ in range(3):
        requests.get(f"{served_app.url}/v2/models/digits", headers=KEY, timeout=60)
    reply = requests.get(f"{served_app.url}/_local/metrics", timeout=10)
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(reply.text)}
    requests_ok = [
        s.value
        for s in families["onnxfn_local_requests"].samples
        if s.labels.get("status") == "200" and s.name.endswith("_total")
    ]
    assert sum(requests_ok) >= 3
    cold = families["onnxfn_local_cold_starts"].samples
    assert any(s.labels["kind"] == "api" and s.value >= 1 for s in cold)
    init = [s for s in families["onnxfn_local_init_duration_milliseconds"].samples if s.name.endswith("_sum")]
    assert init and all(s.value > 0 for s in init)
    emf = [name for name in families if name.startswith("onnxfn_") and not name.startswith("onnxfn_local_")]
    assert emf, f"no metric from the handlers' EMF lines among {sorted(families)}"


def test_lambda_invoke_api_with_boto3(served_app):
    name = served_app.state["models"]["digits"]["functions"]["api"]
    client = boto3.client(
        "lambda",
        endpoint_url=served_app.url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    event = {"httpMethod": "GET", "path": "/v2/health/live", "headers": {}, "requestContext": {"stage": "prod"}}
    reply = client.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    assert reply["StatusCode"] == 200 and "FunctionError" not in reply
    payload = json.loads(reply["Payload"].read())
    assert payload["statusCode"] == 200 and json.loads(payload["body"]) == {"live": True}
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="no-such-function", Payload=b"{}")


def test_request_log_shows_cold_starts(served_app):
    requests.get(f"{served_app.url}/v2/models/minilm", headers=KEY, timeout=60)
    deadline = time.monotonic() + 5
    while "cold start: init" not in served_app.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    output = served_app.output()
    assert "GET /v2/models/minilm 200" in output
    assert "cold start: init" in output


def test_onnxfn_invoke_against_the_running_app(served_app):
    done = subprocess.run(
        [str(ONNXFN), "invoke", "--state-file", str(served_app.state_file), "api", "GET", "/v2/models/digits"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "digits"
    assert served_app.url in done.stderr


def test_onnxfn_invoke_starts_the_app_when_none_runs(real_assembly, tmp_path):
    body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]})
    where = ["--state-file", str(tmp_path / "none.json"), "--app", str(real_assembly)]
    done = subprocess.run(
        [str(ONNXFN), "invoke", *where, "queue", "minilm", "--data", body],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"][0]["shape"] == [1, 384]
    assert "app started for this call" in done.stderr

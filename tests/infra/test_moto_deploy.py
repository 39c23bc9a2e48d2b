"""Every variant's synthesized template deployed into moto (``moto_cloud``), then one request through
each path against what was deployed: the API route to its function's ``live`` alias, an S3 file
through the inbox's notification and queue to the batch function, a queued request to the worker.

The functions run as ``onnxfn serve`` runs them (the runtime's interpreter, the staged code, the
built layer; an image or arm64 function on the host layer built from the same requirements) with the
environment moto's Lambda holds for the alias's version, against the moto server they were deployed
into. Nothing is taken from the template at request time: routes, aliases, versions, permissions,
event source mappings, queues and the notification configuration are read back from moto.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from onnxfn.local.assembly import load_assembly
from onnxfn.local.cloud import lambda_environment, launch_plan, local_aws_environment
from onnxfn.local.events import api_gateway_event, sqs_event
from onnxfn.local.functions import FunctionPool, FunctionRuntime
from onnxfn.local.runtime import RuntimeOptions
from tests.infra import moto_cloud
from tests.infra.conftest import QUALIFIER

DEPLOYED_VARIANTS = ["default", "options", "iam", "docs_off", "image", "arm64", "qualifier"]
PIXELS = [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0] * 8
REQUEST = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": PIXELS}]}


@pytest.fixture
def endpoint() -> Iterator[str]:
    """A moto server of its own (a process: moto's backends are per process, and the other tests'
    in-process moto must not see these resources), on a free port of 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MOTO_LAMBDA_STUB_ECR": "false"}  # an image function's ImageUri must exist in ECR
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _deploy(synth: Any, variant: str, endpoint: str) -> tuple[Any, moto_cloud.Deployed]:
    s = synth(variant)
    # CloudFormation resolves each model's nested stack into its parent's; moto's cannot, so the
    # app's templates are deployed as the one template they resolve to (assembly.flatten)
    template = s.template.to_json()
    qualifier = QUALIFIER if variant == "qualifier" else "hnb659fds"
    return s, moto_cloud.deploy(endpoint, template, s.outdir, s.stack.stack_name, qualifier)


class Function:
    """A deployed function as Lambda runs its ``live`` alias: moto's configuration of that version."""

    def __init__(self, deployed: moto_cloud.Deployed, outdir: Any, alias_arn: str) -> None:
        name = alias_arn.split(":")[6]
        lambda_ = deployed.client("lambda")
        version = lambda_.get_alias(FunctionName=name, Name="live")["FunctionVersion"]
        config = lambda_.get_function_configuration(FunctionName=name, Qualifier=version)
        self.config = config
        spec = load_assembly(outdir).function(name.removeprefix("Onnxfn-"))
        handler = config.get("Handler") or config["ImageConfigResponse"]["ImageConfig"]["Command"][0]
        environment = {
            **config["Environment"]["Variables"],
            **lambda_environment(
                name, config["MemorySize"], spec.runtime, handler, spec.code_dir, config["FunctionArn"]
            ),
            **local_aws_environment(deployed.endpoint),
        }
        runtime = FunctionRuntime(
            logical_id=spec.logical_id,
            name=name,
            handler=handler,
            code_dir=spec.code_dir.resolve(),
            environment=environment,
            memory_mb=config["MemorySize"],
            timeout_s=float(config["Timeout"]),
            arn=config["FunctionArn"],
            launch=launch_plan(spec, RuntimeOptions()),
            kind=spec.kind,
        )
        self.logs: list[str] = []
        self.pool = FunctionPool(runtime, 1, lambda _name, line: self.logs.append(line))

    def invoke(self, event: dict[str, Any]) -> Any:
        invocation = self.pool.invoke(event, wait_s=60)
        assert invocation.ok, (invocation.error, self.logs[-20:])
        return invocation.payload

    def close(self) -> None:
        self.pool.close()


def _api_route(deployed: moto_cloud.Deployed, path: str) -> tuple[str, dict[str, Any]]:
    api = deployed.client("apigateway")
    (rest,) = api.get_rest_apis()["items"]
    resources = {r["path"]: r for r in api.get_resources(restApiId=rest["id"], limit=500)["items"]}
    method = api.get_method(restApiId=rest["id"], resourceId=resources[path]["id"], httpMethod="ANY")
    return rest["id"], method


def _queue_of(deployed: moto_cloud.Deployed, alias_arn: str) -> tuple[str, str]:
    """The queue feeding the alias's event source mapping. The mapping is then switched off: moto
    would run the function itself on each new message, which it can do only in Docker; the test
    delivers the messages as the mapping does."""
    lambda_ = deployed.client("lambda")
    mappings = lambda_.list_event_source_mappings()["EventSourceMappings"]
    name = alias_arn.split(":")[6]
    version = lambda_.get_alias(FunctionName=name, Name="live")["FunctionVersion"]
    # moto records the version the alias points at where AWS keeps the alias's ARN
    targets = {alias_arn, f"{alias_arn.rsplit(':', 1)[0]}:{version}"}
    found = [m for m in mappings if m["FunctionArn"] in targets]
    assert len(found) == 1, (alias_arn, [m["FunctionArn"] for m in mappings])
    (mapping,) = found
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"] and mapping["ScalingConfig"]
    lambda_.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    arn = mapping["EventSourceArn"]
    url = deployed.client("sqs").get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"]
    return arn, url


def _receive(deployed: moto_cloud.Deployed, url: str, wanted: int = 1) -> list[dict[str, Any]]:
    sqs, found, deadline = deployed.client("sqs"), [], time.monotonic() + 20
    while len(found) < wanted and time.monotonic() < deadline:
        found += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
    return found


@pytest.mark.parametrize("variant", DEPLOYED_VARIANTS)
def test_every_resource_is_deployed_and_each_path_answers(synth, endpoint, variant):
    s, deployed = _deploy(synth, variant, endpoint)
    template = s.template.to_json()
    created = {**deployed.by_cloudformation, **deployed.by_apis}
    assert set(created) == set(template["Resources"])  # every resource, one way or the other
    assert set(deployed.by_apis.values()) >= moto_cloud.CFN_CANNOT & {r["Type"] for r in template["Resources"].values()}

    # --- the API: route -> method -> alias -> version -> configuration, and the invoke permission
    rest_id, method = _api_route(deployed, "/v2/models/digits/{proxy+}")
    uri = method["methodIntegration"]["uri"]
    alias_arn = uri.split("/functions/")[1].removesuffix("/invocations")
    assert alias_arn.endswith(":live")
    digits_iam = variant in ("options", "iam")
    assert method["authorizationType"] == ("AWS_IAM" if digits_iam else "NONE")
    assert method["apiKeyRequired"] is (not digits_iam)
    policy = json.loads(deployed.client("lambda").get_policy(FunctionName=alias_arn)["Policy"])
    assert any(
        st["Principal"] == {"Service": "apigateway.amazonaws.com"} and rest_id in json.dumps(st.get("Condition"))
        for st in policy["Statement"]
    )
    apigw = deployed.client("apigateway")
    assert apigw.get_stage(restApiId=rest_id, stageName="prod")["deploymentId"]
    missing = apigw.get_gateway_response(restApiId=rest_id, responseType="MISSING_AUTHENTICATION_TOKEN")
    assert missing["statusCode"] == ("403" if digits_iam else "404")
    if not digits_iam:
        (plan,) = apigw.get_usage_plans()["items"]
        assert plan["apiStages"] == [{"apiId": rest_id, "stage": "prod"}]
        assert apigw.get_usage_plan_keys(usagePlanId=plan["id"])["items"]

    api = Function(deployed, s.outdir, alias_arn)
    batch = worker = None
    try:
        assert api.config["Environment"]["Variables"]["MANIFEST_VERSION_ID"] not in ("", "null")
        event = api_gateway_event(
            "POST", "/v2/models/digits/infer", json.dumps(REQUEST), {"Content-Type": "application/json"}
        )
        reply = api.invoke(event)
        assert reply["statusCode"] == 200, reply
        (output,) = [o for o in json.loads(reply["body"])["outputs"] if o["name"] == "label"]
        assert output["shape"] == [1] and 0 <= output["data"][0] <= 9

        # --- S3 inbox -> notification -> queue -> batch function -> outbox
        bucket = api.config["Environment"]["Variables"]["DATA_BUCKET"]
        batch_alias = alias_arn.replace(
            s.logical_id(s.stack.functions["digits"]["api"].function),
            s.logical_id(s.stack.functions["digits"]["batch"].function),
        )
        inbox_arn, inbox_url = _queue_of(deployed, batch_alias)
        s3 = deployed.client("s3")
        s3.put_object(Bucket=bucket, Key="inbox/digits/rows.jsonl", Body=(json.dumps(REQUEST) + "\n") * 3)
        messages = [m for m in _receive(deployed, inbox_url, 2) if "rows.jsonl" in m["Body"]]
        assert messages, "the inbox notification did not reach the batch queue"
        batch = Function(deployed, s.outdir, batch_alias)
        assert batch.invoke(sqs_event(messages[:1], inbox_arn)) == {"batchItemFailures": []}
        summary = json.loads(s3.get_object(Bucket=bucket, Key="outbox/digits/rows.jsonl.summary.json")["Body"].read())
        assert summary["records_in"] == summary["scored"] == 3 and summary["failed"] == 0

        # --- the batch function's state machine: the ARN it was given is the one deployed, whose
        # definition invokes this very alias
        machine = batch.config["Environment"]["Variables"]["BIG_BATCH_STATE_MACHINE"]
        definition = deployed.client("stepfunctions").describe_state_machine(stateMachineArn=machine)["definition"]
        assert f'"FunctionName": "{batch_alias}"' in definition

        # --- request queue -> worker function -> results
        worker_alias = batch_alias.replace(
            s.logical_id(s.stack.functions["digits"]["batch"].function),
            s.logical_id(s.stack.functions["digits"]["worker"].function),
        )
        requests_arn, requests_url = _queue_of(deployed, worker_alias)
        deployed.client("sqs").send_message(QueueUrl=requests_url, MessageBody=json.dumps(REQUEST))
        worker = Function(deployed, s.outdir, worker_alias)
        assert worker.invoke(sqs_event(_receive(deployed, requests_url), requests_arn)) == {"batchItemFailures": []}
        results = s3.list_objects_v2(Bucket=bucket, Prefix="results/digits/")["Contents"]
        assert len(results) == 1
    finally:
        for function in (api, batch, worker):
            if function is not None:
                function.close()


def test_what_neither_cloudformation_nor_the_apis_can_exercise_is_named_with_its_reason():
    assert all(len(reason) > 30 for reason in moto_cloud.ASSERTED_ONLY.values())
    assert not moto_cloud.CFN_CANNOT & moto_cloud.CFN_LOSSY
    assert set(moto_cloud.CREATORS) >= moto_cloud.CFN_CANNOT | moto_cloud.CFN_LOSSY

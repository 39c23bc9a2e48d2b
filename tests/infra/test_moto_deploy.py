"""The synthesized template deployed to moto's CloudFormation (moto server on 127.0.0.1).

moto creates buckets, roles, functions, layers, versions, aliases, queues, event source mappings,
REST API resources and methods, SNS topics, log groups and dashboards. It cannot create the types in
``NOT_IN_MOTO`` (see DESIGN.md); those are removed before the deploy, references to them become
placeholders, and they are covered by the template assertions in test_stack.py instead.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

ACCOUNT = "123456789012"
REGION = "us-east-1"
NOT_IN_MOTO = {
    "AWS::S3::BucketPolicy",
    "AWS::ApiGateway::Account",
    "AWS::ApiGateway::Stage",
    "AWS::ApiGateway::ApiKey",
    "AWS::ApiGateway::UsagePlan",
    "AWS::ApiGateway::UsagePlanKey",
    "AWS::CloudWatch::Alarm",
    "Custom::S3BucketNotifications",  # runs CDK's notification Lambda: needs Lambda execution
    "Custom::CDKBucketDeployment",  # runs CDK's upload Lambda: needs Lambda execution (Docker)
    "AWS::Lambda::Alias",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::ApiGateway::RequestValidator",
}
# Resources that only exist to point at a removed one: API Gateway's invoke permissions and the SQS
# event source mappings, both on the `live` alias (asserted on the template in test_stack.py).
CASCADE = {"AWS::Lambda::Permission", "AWS::Lambda::EventSourceMapping"}


def _strip(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Remove the types moto cannot create; turn references to them into placeholder strings."""
    resources = template["Resources"]
    removed = {lid: r["Type"] for lid, r in resources.items() if r["Type"] in NOT_IN_MOTO}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Ref"} and node["Ref"] in removed:
                return f"removed-{node['Ref']}"
            if set(node) == {"Fn::GetAtt"} and node["Fn::GetAtt"][0] in removed:
                return f"removed-{node['Fn::GetAtt'][0]}"
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for lid, resource in resources.items():
        if resource["Type"] in CASCADE and json.dumps(rewrite(resource)) != json.dumps(resource):
            removed[lid] = resource["Type"]
    kept = {}
    for lid, original in resources.items():
        if lid in removed:
            continue
        resource = rewrite(original)
        depends = resource.get("DependsOn")
        if depends:
            depends = [d for d in ([depends] if isinstance(depends, str) else depends) if d not in removed]
            resource["DependsOn"] = depends
            if not depends:
                del resource["DependsOn"]
        kept[lid] = resource
    stripped = {**template, "Resources": kept, "Outputs": rewrite(template.get("Outputs", {}))}
    return stripped, removed


def _zip_dir(source: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(source))
    return target


def _publish_assets(s3: Any, outdir: Path, stack_name: str, tmp: Path) -> int:
    """What `cdk deploy` does first (cdk-assets): put every file asset where the template expects it."""
    assets = json.loads((outdir / f"{stack_name}.assets.json").read_text())
    count = 0
    for asset_id, asset in assets["files"].items():
        source = outdir / asset["source"]["path"]
        for destination in asset["destinations"].values():
            bucket = destination["bucketName"].replace("${AWS::AccountId}", ACCOUNT).replace("${AWS::Region}", REGION)
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=bucket)
            body = source if asset["source"]["packaging"] == "file" else _zip_dir(source, tmp / f"{asset_id}.zip")
            s3.upload_file(str(body), bucket, destination["objectKey"])
            count += 1
    return count


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_template_deploys_to_moto_cloudformation(synth, moto_endpoint, tmp_path):
    s = synth("default")
    template = json.loads(s.template_file.read_text())
    stripped, removed = _strip(template)
    assert set(removed.values()) == NOT_IN_MOTO | CASCADE  # the default stack uses every one of them

    ssm = _client("ssm", moto_endpoint)
    ssm.put_parameter(Name="/cdk-bootstrap/hnb659fds/version", Value="30", Type="String", Overwrite=True)
    s3 = _client("s3", moto_endpoint)
    assert _publish_assets(s3, s.outdir, s.stack.stack_name, tmp_path) >= 5

    cfn = _client("cloudformation", moto_endpoint)
    cfn.create_stack(StackName="Onnxfn", TemplateBody=json.dumps(stripped), Capabilities=["CAPABILITY_IAM"])
    stack = cfn.describe_stacks(StackName="Onnxfn")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")

    created = {
        r["LogicalResourceId"]: r for r in cfn.list_stack_resources(StackName="Onnxfn")["StackResourceSummaries"]
    }
    assert set(created) == set(stripped["Resources"])
    assert all(r["ResourceStatus"] == "CREATE_COMPLETE" for r in created.values())

    def physical(construct: Any) -> str:
        return str(created[s.logical_id(construct)]["PhysicalResourceId"])

    bucket = physical(s.stack.storage.bucket)
    # moto's CloudFormation applies encryption (versioning and logging are asserted on the template)
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    lambda_ = _client("lambda", moto_endpoint)
    sqs = _client("sqs", moto_endpoint)

    for model in ("digits", "minilm"):
        for role, handler in (("api", "api"), ("batch", "s3_batch"), ("worker", "queue_worker")):
            fn = s.stack.functions[model][role]
            config = lambda_.get_function_configuration(FunctionName=physical(fn.function))
            assert config["Handler"] == f"handlers.{handler}.lambda_handler"
            assert config["Environment"]["Variables"]["MODEL_BUCKET"] == bucket
            assert config["Environment"]["Variables"]["MODEL_NAME"] == model
            assert config["Runtime"] == "python3.12" and config["MemorySize"] == (512 if model == "digits" else 1769)
    for model in ("digits", "minilm"):
        for owner in (s.stack.inboxes[model], s.stack.request_queues[model]):
            url = physical(owner.queue)
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 3

    apigw = _client("apigateway", moto_endpoint)
    api_id = physical(s.stack.api.api)
    paths = {r["path"] for r in apigw.get_resources(restApiId=api_id, limit=500)["items"]}
    assert {"/v2/models/digits/{proxy+}", "/v1/models/minilm:predict", "/v2/health/ready", "/swagger"} <= paths

    runtimes = [layer["LatestMatchingVersion"].get("CompatibleRuntimes") for layer in lambda_.list_layers()["Layers"]]
    assert ["python3.12"] in runtimes  # the dependency layer (the other is CDK's own awscli layer)

    sns = _client("sns", moto_endpoint)
    assert physical(s.stack.monitoring.topic) in {t["TopicArn"] for t in sns.list_topics()["Topics"]}
    cloudwatch = _client("cloudwatch", moto_endpoint)
    assert physical(s.stack.monitoring.dashboard) in {
        d["DashboardName"] for d in cloudwatch.list_dashboards()["DashboardEntries"]
    }

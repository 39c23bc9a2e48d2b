"""A small cloud assembly, written as CDK writes one, around the misbehaving handler in
``faulty_function/``: an API (open proxy, a keyed route, a slow route), a queue with a
dead-letter queue feeding the function with partial batch responses, and a bucket."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ASSET = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"
STACK = "Faulty"
TIMEOUT_S = 2
SLOW_TIMEOUT_S = 10
MEMORY_MB = 256
MAX_RECEIVE = 2


def _function(timeout: int) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Code": {"S3Bucket": {"Fn::Sub": "cdk-assets-${AWS::AccountId}-${AWS::Region}"}, "S3Key": f"{ASSET}.zip"},
            "Handler": "faulty.lambda_handler",
            "Runtime": "python3.12",
            "MemorySize": MEMORY_MB,
            "Timeout": timeout,
            "Environment": {
                "Variables": {
                    "BUCKET": {"Ref": "Data"},
                    "QUEUE_URL": {"Ref": "Jobs"},
                    "QUEUE_ARN": {"Fn::GetAtt": ["Jobs", "Arn"]},
                }
            },
        },
        "Metadata": {"aws:asset:path": f"asset.{ASSET}"},
    }


def _method(resource: Any, verb: str, function: str, *, key: bool = False) -> dict[str, Any]:
    uri = {"Fn::Join": ["", ["arn:aws:apigateway:", {"Ref": "AWS::Region"}, ":lambda:path/functions/",
                             {"Fn::GetAtt": [function, "Arn"]}, "/invocations"]]}  # fmt: skip
    return {
        "Type": "AWS::ApiGateway::Method",
        "Properties": {
            "RestApiId": {"Ref": "Api"},
            "ResourceId": resource,
            "HttpMethod": verb,
            "AuthorizationType": "NONE",
            "ApiKeyRequired": key,
            "Integration": {"Type": "AWS_PROXY", "IntegrationHttpMethod": "POST", "Uri": uri},
        },
    }


def _resource(parent: Any, part: str) -> dict[str, Any]:
    return {
        "Type": "AWS::ApiGateway::Resource",
        "Properties": {"RestApiId": {"Ref": "Api"}, "ParentId": parent, "PathPart": part},
    }


def template() -> dict[str, Any]:
    root = {"Fn::GetAtt": ["Api", "RootResourceId"]}
    return {
        "Resources": {
            "Data": {"Type": "AWS::S3::Bucket"},
            "Dead": {"Type": "AWS::SQS::Queue"},
            "Jobs": {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "VisibilityTimeout": 30,
                    "RedrivePolicy": {
                        "deadLetterTargetArn": {"Fn::GetAtt": ["Dead", "Arn"]},
                        "maxReceiveCount": MAX_RECEIVE,
                    },
                },
            },
            "Fn": _function(TIMEOUT_S),
            "Slow": _function(SLOW_TIMEOUT_S),
            "Api": {
                "Type": "AWS::ApiGateway::RestApi",
                "Properties": {"Name": "faulty", "BinaryMediaTypes": ["application/octet-stream"]},
            },
            "Stage": {
                "Type": "AWS::ApiGateway::Stage",
                "Properties": {"RestApiId": {"Ref": "Api"}, "StageName": "test"},
            },
            "Key": {"Type": "AWS::ApiGateway::ApiKey", "Properties": {"Enabled": True}},
            "Proxy": _resource(root, "{proxy+}"),
            "ProxyAny": _method({"Ref": "Proxy"}, "ANY", "Fn"),
            "SlowPath": _resource(root, "slow"),
            "SlowGet": _method({"Ref": "SlowPath"}, "GET", "Slow"),
            "Items": _resource(root, "items"),
            "Item": _resource({"Ref": "Items"}, "{id}"),
            "ItemGet": _method({"Ref": "Item"}, "GET", "Fn", key=True),
            "Mapping": {
                "Type": "AWS::Lambda::EventSourceMapping",
                "Properties": {
                    "EventSourceArn": {"Fn::GetAtt": ["Jobs", "Arn"]},
                    "FunctionName": {"Ref": "Fn"},
                    "BatchSize": 5,
                    "MaximumBatchingWindowInSeconds": 1,
                    "FunctionResponseTypes": ["ReportBatchItemFailures"],
                },
            },
        }
    }


def build(directory: Path) -> Path:
    """Write the assembly into ``directory`` (manifest, template, assets) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(HERE / "faulty_function", directory / f"asset.{ASSET}", dirs_exist_ok=True)
    (directory / f"{STACK}.template.json").write_text(json.dumps(template(), indent=1))
    assets = {"version": "55.0.0", "files": {ASSET: {"source": {"path": f"asset.{ASSET}", "packaging": "zip"}}}}
    (directory / f"{STACK}.assets.json").write_text(json.dumps(assets))
    manifest = {
        "version": "55.0.0",
        "artifacts": {
            STACK: {"type": "aws:cloudformation:stack", "properties": {"templateFile": f"{STACK}.template.json"}},
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory

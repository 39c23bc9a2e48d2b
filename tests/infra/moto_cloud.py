"""A synthesized template deployed into moto as `cdk deploy` would deploy it, without AWS.

What `cdk deploy` does first (cdk-assets) is done here too: file assets into the bootstrap bucket,
container images into the bootstrap repository, the bootstrap version parameter. Then every resource
is created one of two ways:

- by moto's CloudFormation (``create_stack``) where moto implements the type faithfully;
- by this module through moto's service APIs, from the template's own properties (``CREATORS``),
  for the types moto's CloudFormation cannot create, for Lambda functions (moto's CloudFormation
  drops their layers, architectures, image configuration, tracing and logging), and for whatever
  refers to one of those, so that no reference is replaced by a placeholder. A wrong property (a
  layer that does not exist, a queue ARN that is not the queue, an alarm without its metric) fails.

``ASSERTED_ONLY`` names what neither way can exercise, and why.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

ACCOUNT = "123456789012"
REGION = "us-east-1"

# Types moto's CloudFormation does not implement (it skips them with a warning).
CFN_CANNOT = {
    "AWS::S3::BucketPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::SNS::Subscription",
    "AWS::ApiGateway::Account",
    "AWS::ApiGateway::Stage",
    "AWS::ApiGateway::ApiKey",
    "AWS::ApiGateway::UsagePlan",
    "AWS::ApiGateway::UsagePlanKey",
    "AWS::ApiGateway::GatewayResponse",
    "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::CompositeAlarm",
    "AWS::Lambda::Alias",
    "AWS::CodeDeploy::Application",
    "AWS::CodeDeploy::DeploymentGroup",
    "Custom::S3BucketNotifications",  # CDK's notification Lambda
    "Custom::CDKBucketDeployment",  # CDK's upload Lambda
    "Custom::AWS",  # CDK's AwsCustomResource Lambda (the manifest's version id)
}
# Implemented by moto's CloudFormation, but lossy: created through the API with every property
# (a function loses its layers, architectures, image configuration, tracing and logging; a layer
# version's physical id comes back empty, so nothing could refer to it).
CFN_LOSSY = {"AWS::Lambda::Function", "AWS::Lambda::LayerVersion"}
# Types whose creation needs what they wait on (DependsOn) to exist: a REST API deployment snapshots
# the methods. Other waits are for ordering only; a resource moto's CloudFormation creates is made
# before everything created through the APIs anyway.
WAITS_MATTER = {"AWS::ApiGateway::Deployment"}

ASSERTED_ONLY = {
    "AWS::S3::BucketPolicy (conditional Deny)": "moto ignores policy conditions: the SSL-only Deny would "
    "refuse every request, so each policy is put whole and read back, then kept without that statement",
    "Rules.CheckBootstrapVersion": "moto ignores CloudFormation rules; the deploy puts the bootstrap version "
    "parameter the rule reads (/cdk-bootstrap/<qualifier>/version), with the template's qualifier",
    "Rules.SnapStartRegion": "CloudFormation rules are evaluated before a deploy; moto ignores them "
    "(test_first_deploy evaluates the assertion for each Region)",
    "AWS::Lambda::Alias.ProvisionedConcurrencyConfig": "moto has no provisioned concurrency API",
    "AWS::Lambda::Alias.UpdatePolicy": "CodeDeploy's traffic shifting runs only during an update of a deployed stack",
    "AWS::Lambda::Function.SnapStart": "moto's Lambda accepts SnapStart but always reports it off",
    "AWS::ApiGateway::Method.AuthorizationType=AWS_IAM": "moto does not enforce IAM; onnxfn serve checks SigV4",
    "AWS::CloudWatch::CompositeAlarm": "moto has no PutCompositeAlarm; the deploy checks that every alarm its "
    "rule names was created, then records it",
}


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            return {node["Ref"]}
        if set(node) == {"Fn::GetAtt"}:
            return {node["Fn::GetAtt"][0]}
        if "Fn::Sub" in node:
            spec = node["Fn::Sub"]
            text = spec if isinstance(spec, str) else spec[0]
            found = {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)}
            return found | (set() if isinstance(spec, str) else _refs(spec[1]))
        return set().union(*(_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def _depends(resource: dict[str, Any]) -> set[str]:
    depends = resource.get("DependsOn", [])
    return {depends} if isinstance(depends, str) else set(depends)


def split(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the template moto's CloudFormation creates, the resources created through the APIs)."""
    resources = template["Resources"]
    through_apis = {lid for lid, r in resources.items() if r["Type"] in CFN_CANNOT | CFN_LOSSY}
    changed = True
    while changed:  # whatever refers to a resource created through the APIs goes with it
        changed = False
        for lid, resource in resources.items():
            if lid in through_apis:
                continue
            waits = _depends(resource) if resource["Type"] in WAITS_MATTER else set()
            if (_refs(resource.get("Properties", {})) | waits) & through_apis:
                through_apis.add(lid)
                changed = True
    kept = {}
    for lid, resource in resources.items():
        if lid not in through_apis:
            kept[lid] = {k: v for k, v in resource.items() if k != "DependsOn"}
            waits = sorted(_depends(resource) - through_apis)
            if waits:
                kept[lid]["DependsOn"] = waits
    stripped = {key: value for key, value in template.items() if key not in ("Outputs", "Rules")}
    stripped["Resources"] = kept
    return stripped, {lid: resources[lid] for lid in through_apis}


@dataclass
class Deployed:
    """The deployed stack: physical ids and attributes by logical id, and how each was created."""

    endpoint: str
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    by_cloudformation: dict[str, str] = field(default_factory=dict)  # logical id -> type
    by_apis: dict[str, str] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return _client(service, self.endpoint)

    def counts(self) -> dict[str, dict[str, int]]:
        report: dict[str, dict[str, int]] = {"cloudformation": {}, "service APIs": {}}
        for where, created in (("cloudformation", self.by_cloudformation), ("service APIs", self.by_apis)):
            for kind in created.values():
                report[where][kind] = report[where].get(kind, 0) + 1
        return report

    # --- intrinsic functions ---------------------------------------------------------------------

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.resolve(v) for v in node]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"}:
            return self.ref(node["Ref"])
        if set(node) == {"Fn::GetAtt"}:
            lid, attribute = node["Fn::GetAtt"][0], ".".join(node["Fn::GetAtt"][1:])
            return self.attributes[(lid, attribute)]
        if "Fn::Join" in node:
            separator, items = node["Fn::Join"]
            return str(separator).join(str(self.resolve(v)) for v in self.resolve(items))
        if "Fn::Select" in node:
            index, items = node["Fn::Select"]
            return self.resolve(items)[int(self.resolve(index))]
        if "Fn::Split" in node:
            separator, text = node["Fn::Split"]
            return str(self.resolve(text)).split(separator)
        if "Fn::Sub" in node:
            spec = node["Fn::Sub"]
            text, variables = (spec, {}) if isinstance(spec, str) else (spec[0], self.resolve(spec[1]))

            def value(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in variables:
                    return str(variables[name])
                if "." in name:
                    lid, attribute = name.split(".", 1)
                    return self.attributes[(lid, attribute)]
                return self.ref(name)

            return re.sub(r"\$\{([^}!]+)\}", value, text)
        return {key: self.resolve(value) for key, value in node.items()}

    def ref(self, name: str) -> str:
        pseudo = {
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "Onnxfn",
        }
        return pseudo.get(name) or self.refs[name]


# --- attributes of what moto's CloudFormation created -------------------------------------------


def _cfn_attributes(deployed: Deployed, lid: str, kind: str, physical: str) -> None:
    """What ``Ref`` and ``Fn::GetAtt`` give for a resource moto's CloudFormation created."""
    refs, attributes = deployed.refs, deployed.attributes
    refs[lid] = physical
    if kind == "AWS::S3::Bucket":
        attributes[(lid, "Arn")] = f"arn:aws:s3:::{physical}"
        attributes[(lid, "RegionalDomainName")] = f"{physical}.s3.{REGION}.amazonaws.com"
        attributes[(lid, "DomainName")] = f"{physical}.s3.amazonaws.com"
    elif kind == "AWS::SQS::Queue":
        arn = deployed.client("sqs").get_queue_attributes(QueueUrl=physical, AttributeNames=["QueueArn"])
        attributes[(lid, "Arn")] = arn["Attributes"]["QueueArn"]
        attributes[(lid, "QueueName")] = physical.rsplit("/", 1)[-1]
        attributes[(lid, "QueueUrl")] = physical
    elif kind == "AWS::IAM::Role":
        attributes[(lid, "Arn")] = deployed.client("iam").get_role(RoleName=physical)["Role"]["Arn"]
    elif kind == "AWS::SNS::Topic":
        attributes[(lid, "TopicArn")] = physical
        attributes[(lid, "TopicName")] = physical.rsplit(":", 1)[-1]
    elif kind == "AWS::KMS::Key":
        # (moto's CloudFormation keeps the key policy as an object, which its DescribeKey cannot answer)
        attributes[(lid, "Arn")] = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{physical}"
    elif kind == "AWS::ApiGateway::RestApi":
        items = deployed.client("apigateway").get_resources(restApiId=physical)["items"]
        attributes[(lid, "RootResourceId")] = next(i["id"] for i in items if i["path"] == "/")
    elif kind == "AWS::Logs::LogGroup":
        attributes[(lid, "Arn")] = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{physical}:*"
    elif kind == "AWS::IAM::ManagedPolicy":
        attributes[(lid, "Arn")] = physical
    elif kind == "AWS::Events::Rule":
        name = physical.rsplit("/", 1)[-1]
        attributes[(lid, "Arn")] = deployed.client("events").describe_rule(Name=name)["Arn"]


def _complete_bucket(d: Deployed, bucket: str, p: dict[str, Any]) -> None:
    """What moto's CloudFormation leaves out of a bucket (it applies only encryption and tags), put
    through the S3 API from the template's properties."""
    s3 = d.client("s3")
    if "VersioningConfiguration" in p:
        s3.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": p["VersioningConfiguration"]["Status"]}
        )
    if "PublicAccessBlockConfiguration" in p:
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"])
    if "OwnershipControls" in p:
        s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=p["OwnershipControls"])
    rules = []
    for rule in p.get("LifecycleConfiguration", {}).get("Rules", []):
        converted: dict[str, Any] = {"Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
        if "ExpirationInDays" in rule:
            converted["Expiration"] = {"Days": rule["ExpirationInDays"]}
        if "NoncurrentVersionExpiration" in rule:
            converted["NoncurrentVersionExpiration"] = {
                "NoncurrentDays": rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
            }
        if "AbortIncompleteMultipartUpload" in rule:
            converted["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
            }
        rules.append(converted)
    if rules:
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})


def _bucket_logging(d: Deployed, bucket: str, p: dict[str, Any]) -> None:
    if "LoggingConfiguration" in p:
        logging = p["LoggingConfiguration"]
        target = {"TargetBucket": logging["DestinationBucketName"], "TargetPrefix": logging["LogFilePrefix"]}
        d.client("s3").put_bucket_logging(Bucket=bucket, BucketLoggingStatus={"LoggingEnabled": target})


# --- creators: one per type created through the service APIs ------------------------------------

Creator = Callable[[Deployed, str, dict[str, Any], dict[str, Any]], None]
CREATORS: dict[str, Creator] = {}


def creates(kind: str) -> Callable[[Creator], Creator]:
    def register(function: Creator) -> Creator:
        CREATORS[kind] = function
        return function

    return register


def _name(lid: str, limit: int = 64) -> str:
    return f"Onnxfn-{lid}"[:limit]


@creates("AWS::Lambda::Function")
def _function(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    keys = (
        "Description",
        "MemorySize",
        "Timeout",
        "Environment",
        "Layers",
        "Architectures",
        "PackageType",
        "ImageConfig",
        "TracingConfig",
        "LoggingConfig",
        "EphemeralStorage",
        "SnapStart",
    )
    spec = {k: p[k] for k in keys if k in p}
    code = dict(p["Code"])
    if "ImageUri" in code:
        spec["Code"] = {"ImageUri": code["ImageUri"]}
    elif "ZipFile" in code:  # inline source (CDK's notification helper): Lambda zips it as index.py
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("index.py", code["ZipFile"])
        spec["Code"] = {"ZipFile": buffer.getvalue()}
    else:
        spec["Code"] = {"S3Bucket": code["S3Bucket"], "S3Key": code["S3Key"]}
    if p.get("Handler"):
        spec.update(Handler=p["Handler"], Runtime=p["Runtime"])
    name = _name(lid)
    created = d.client("lambda").create_function(FunctionName=name, Role=p["Role"], **spec)
    if "ReservedConcurrentExecutions" in p:
        d.client("lambda").put_function_concurrency(
            FunctionName=name, ReservedConcurrentExecutions=p["ReservedConcurrentExecutions"]
        )
    d.refs[lid] = name
    d.attributes[(lid, "Arn")] = created["FunctionArn"]


@creates("AWS::Lambda::LayerVersion")
def _layer(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    keys = ("Description", "CompatibleRuntimes", "CompatibleArchitectures", "LicenseInfo")
    content = {"S3Bucket": p["Content"]["S3Bucket"], "S3Key": p["Content"]["S3Key"]}
    published = d.client("lambda").publish_layer_version(
        LayerName=p.get("LayerName", _name(lid)), Content=content, **{k: p[k] for k in keys if k in p}
    )
    d.refs[lid] = published["LayerVersionArn"]


@creates("AWS::Lambda::Version")
def _version(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    published = d.client("lambda").publish_version(FunctionName=p["FunctionName"], Description=p.get("Description", ""))
    d.refs[lid] = published["FunctionArn"]
    d.attributes[(lid, "Version")] = published["Version"]


@creates("AWS::Lambda::Alias")
def _alias(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    alias = d.client("lambda").create_alias(
        FunctionName=p["FunctionName"], Name=p["Name"], FunctionVersion=p["FunctionVersion"]
    )
    d.refs[lid] = alias["AliasArn"]


@creates("AWS::Lambda::Permission")
def _permission(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    extra = {"SourceArn": p["SourceArn"]} if "SourceArn" in p else {}
    if "SourceAccount" in p:
        extra["SourceAccount"] = p["SourceAccount"]
    d.client("lambda").add_permission(
        FunctionName=p["FunctionName"], StatementId=lid, Action=p["Action"], Principal=p["Principal"], **extra
    )
    d.refs[lid] = lid


@creates("AWS::Lambda::EventSourceMapping")
def _mapping(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    keys = ("BatchSize", "MaximumBatchingWindowInSeconds", "FunctionResponseTypes", "ScalingConfig", "Enabled")
    created = d.client("lambda").create_event_source_mapping(
        EventSourceArn=p["EventSourceArn"], FunctionName=p["FunctionName"], **{k: p[k] for k in keys if k in p}
    )
    d.refs[lid] = created["UUID"]


@creates("AWS::S3::BucketPolicy")
def _bucket_policy(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    """Put whole and read back; then in force without its conditional Deny statements: moto ignores
    conditions, so the SSL-only Deny (``aws:SecureTransport`` false) would refuse every request."""
    s3 = d.client("s3")
    s3.put_bucket_policy(Bucket=p["Bucket"], Policy=json.dumps(p["PolicyDocument"]))
    assert json.loads(s3.get_bucket_policy(Bucket=p["Bucket"])["Policy"]) == p["PolicyDocument"]
    statements = p["PolicyDocument"]["Statement"]
    kept = [st for st in statements if not (st["Effect"] == "Deny" and "Condition" in st)]
    if kept:
        s3.put_bucket_policy(Bucket=p["Bucket"], Policy=json.dumps({**p["PolicyDocument"], "Statement": kept}))
    else:
        s3.delete_bucket_policy(Bucket=p["Bucket"])
    d.refs[lid] = p["Bucket"]


@creates("AWS::SQS::QueuePolicy")
def _queue_policy(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    for url in p["Queues"]:
        d.client("sqs").set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(p["PolicyDocument"])})
    d.refs[lid] = lid


@creates("AWS::SNS::TopicPolicy")
def _topic_policy(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    for arn in p["Topics"]:
        d.client("sns").set_topic_attributes(
            TopicArn=arn, AttributeName="Policy", AttributeValue=json.dumps(p["PolicyDocument"])
        )
    d.refs[lid] = lid


@creates("AWS::SNS::Subscription")
def _subscription(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    created = d.client("sns").subscribe(TopicArn=p["TopicArn"], Protocol=p["Protocol"], Endpoint=p["Endpoint"])
    d.refs[lid] = created["SubscriptionArn"]


@creates("AWS::CloudWatch::Alarm")
def _alarm(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    d.client("cloudwatch").put_metric_alarm(AlarmName=_name(lid, 255), **p)
    d.refs[lid] = _name(lid, 255)
    d.attributes[(lid, "Arn")] = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{_name(lid, 255)}"


@creates("AWS::CloudWatch::CompositeAlarm")
def _composite_alarm(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    names = re.findall(r'ALARM\("?arn:aws:cloudwatch:[^:]+:\d+:alarm:([^")]+)"?\)', p["AlarmRule"])
    alarms = d.client("cloudwatch").describe_alarms(AlarmNames=names)["MetricAlarms"]
    assert names and {a["AlarmName"] for a in alarms} == set(names), p["AlarmRule"]
    d.refs[lid] = _name(lid, 255)
    d.attributes[(lid, "Arn")] = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{_name(lid, 255)}"


@creates("AWS::IAM::Policy")
def _policy(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    for role in p.get("Roles", []):
        d.client("iam").put_role_policy(
            RoleName=role, PolicyName=p["PolicyName"], PolicyDocument=json.dumps(p["PolicyDocument"])
        )
    d.refs[lid] = p["PolicyName"]


@creates("AWS::StepFunctions::StateMachine")
def _state_machine(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    definition = p["DefinitionString"]
    for key, value in p.get("DefinitionSubstitutions", {}).items():
        assert f"${{{key}}}" in definition, f"{lid}: substitution {key} is not used"
        definition = definition.replace(f"${{{key}}}", str(value))
    parsed = json.loads(definition)  # substituted, the definition must be JSON naming real functions
    functions = re.findall(r'"FunctionName": ?"([^"]+)"', definition)
    for arn in functions:
        d.client("lambda").get_alias(FunctionName=arn.rsplit(":", 1)[0], Name=arn.rsplit(":", 1)[1])
    assert parsed["StartAt"] in parsed["States"] and functions
    spec = {"tracingConfiguration": {"enabled": p.get("TracingConfiguration", {}).get("Enabled", False)}}
    created = d.client("stepfunctions").create_state_machine(
        name=p["StateMachineName"], definition=definition, roleArn=p["RoleArn"], **spec
    )
    d.refs[lid] = created["stateMachineArn"]
    d.attributes[(lid, "Arn")] = created["stateMachineArn"]
    d.attributes[(lid, "Name")] = p["StateMachineName"]


@creates("AWS::CloudWatch::Dashboard")
def _dashboard(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    body = json.loads(p["DashboardBody"])  # the widgets name the functions: it must be valid JSON
    d.client("cloudwatch").put_dashboard(DashboardName=_name(lid, 255), DashboardBody=json.dumps(body))
    d.refs[lid] = _name(lid, 255)


@creates("AWS::ApiGateway::Method")
def _method(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    api = d.client("apigateway")
    where = {"restApiId": p["RestApiId"], "resourceId": p["ResourceId"], "httpMethod": p["HttpMethod"]}
    auth = {"authorizationType": p.get("AuthorizationType", "NONE"), "apiKeyRequired": bool(p.get("ApiKeyRequired"))}
    api.put_method(**where, **auth)
    integration = p["Integration"]
    api.put_integration(
        **where,
        type=integration["Type"],
        integrationHttpMethod=integration["IntegrationHttpMethod"],
        uri=integration["Uri"],
    )
    d.refs[lid] = lid


@creates("AWS::ApiGateway::Deployment")
def _deployment(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    created = d.client("apigateway").create_deployment(restApiId=p["RestApiId"], description=p.get("Description", ""))
    d.refs[lid] = created["id"]


@creates("AWS::ApiGateway::Stage")
def _stage(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    api = d.client("apigateway")
    api.create_stage(
        restApiId=p["RestApiId"],
        stageName=p["StageName"],
        deploymentId=p["DeploymentId"],
        tracingEnabled=bool(p.get("TracingEnabled", False)),
    )
    patches = []
    for setting in p.get("MethodSettings", []):
        base = f"/{setting['ResourcePath'].replace('/', '~1')}/{setting['HttpMethod']}"
        for key, path in (("MetricsEnabled", "metrics/enabled"), ("LoggingLevel", "logging/loglevel")):
            if key in setting:
                patches.append({"op": "replace", "path": f"{base}/{path}", "value": str(setting[key])})
        for key, path in (
            ("ThrottlingRateLimit", "throttling/rateLimit"),
            ("ThrottlingBurstLimit", "throttling/burstLimit"),
        ):
            if key in setting:
                patches.append({"op": "replace", "path": f"{base}/{path}", "value": str(setting[key])})
    if "AccessLogSetting" in p:
        log = p["AccessLogSetting"]
        patches.append({"op": "replace", "path": "/accessLogSettings/destinationArn", "value": log["DestinationArn"]})
        patches.append({"op": "replace", "path": "/accessLogSettings/format", "value": log["Format"]})
    if patches:
        api.update_stage(restApiId=p["RestApiId"], stageName=p["StageName"], patchOperations=patches)
    d.refs[lid] = p["StageName"]


@creates("AWS::ApiGateway::Account")
def _account(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    d.client("apigateway").update_account(
        patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": p["CloudWatchRoleArn"]}]
    )
    d.refs[lid] = lid


@creates("AWS::ApiGateway::ApiKey")
def _api_key(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    created = d.client("apigateway").create_api_key(name=_name(lid, 128), enabled=bool(p.get("Enabled", True)))
    d.refs[lid] = created["id"]


@creates("AWS::ApiGateway::UsagePlan")
def _usage_plan(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    throttle = p.get("Throttle", {})
    created = d.client("apigateway").create_usage_plan(
        name=_name(lid, 128),
        apiStages=[{"apiId": s["ApiId"], "stage": s["Stage"]} for s in p.get("ApiStages", [])],
        throttle={"rateLimit": float(throttle["RateLimit"]), "burstLimit": int(throttle["BurstLimit"])},
    )
    d.refs[lid] = created["id"]


@creates("AWS::ApiGateway::UsagePlanKey")
def _usage_plan_key(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    d.client("apigateway").create_usage_plan_key(usagePlanId=p["UsagePlanId"], keyId=p["KeyId"], keyType=p["KeyType"])
    d.refs[lid] = p["KeyId"]


@creates("AWS::ApiGateway::GatewayResponse")
def _gateway_response(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    extra = {"statusCode": p["StatusCode"]} if "StatusCode" in p else {}
    d.client("apigateway").put_gateway_response(
        restApiId=p["RestApiId"],
        responseType=p["ResponseType"],
        responseTemplates=p.get("ResponseTemplates", {}),
        responseParameters=p.get("ResponseParameters", {}),
        **extra,
    )
    d.refs[lid] = lid


@creates("AWS::CodeDeploy::Application")
def _codedeploy_application(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    d.client("codedeploy").create_application(applicationName=_name(lid, 100), computePlatform=p["ComputePlatform"])
    d.refs[lid] = _name(lid, 100)


@creates("AWS::CodeDeploy::DeploymentGroup")
def _deployment_group(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    alarms = p.get("AlarmConfiguration", {})
    rollback = p.get("AutoRollbackConfiguration", {})
    d.client("codedeploy").create_deployment_group(
        applicationName=p["ApplicationName"],
        deploymentGroupName=_name(lid, 100),
        serviceRoleArn=p["ServiceRoleArn"],
        deploymentConfigName=p["DeploymentConfigName"],
        deploymentStyle={
            "deploymentType": p["DeploymentStyle"]["DeploymentType"],
            "deploymentOption": p["DeploymentStyle"]["DeploymentOption"],
        },
        alarmConfiguration={"enabled": alarms["Enabled"], "alarms": [{"name": a["Name"]} for a in alarms["Alarms"]]},
        autoRollbackConfiguration={"enabled": rollback["Enabled"], "events": rollback["Events"]},
    )
    d.refs[lid] = _name(lid, 100)


@creates("Custom::S3BucketNotifications")
def _notifications(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    d.client("s3").put_bucket_notification_configuration(
        Bucket=p["BucketName"], NotificationConfiguration=p["NotificationConfiguration"]
    )
    d.refs[lid] = lid


@creates("Custom::CDKBucketDeployment")
def _bucket_deployment(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    """What CDK's upload function does: unzip each source into the destination prefix."""
    s3 = d.client("s3")
    for bucket, key in zip(p["SourceBucketNames"], p["SourceObjectKeys"], strict=True):
        archive = zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        for info in archive.infolist():
            if not info.is_dir():
                target = f"{p.get('DestinationBucketKeyPrefix', '')}{info.filename}"
                s3.put_object(Bucket=p["DestinationBucketName"], Key=target, Body=archive.read(info))
    d.refs[lid] = lid


@creates("Custom::AWS")
def _sdk_call(d: Deployed, lid: str, p: dict[str, Any], raw: dict[str, Any]) -> None:
    """What CDK's AwsCustomResource function does with an SDK call: here, S3 headObject."""
    call = json.loads(p["Create"])
    assert call["service"] == "S3" and call["action"] == "headObject", call
    head = d.client("s3").head_object(**call["parameters"])
    for path in call["outputPaths"]:
        d.attributes[(lid, path)] = head[path]
    d.refs[lid] = call["physicalResourceId"]["id"]


# --- deploying ------------------------------------------------------------------------------------


def publish_assets(d: Deployed, outdir: Path, stack: str, qualifier: str) -> int:
    """cdk-assets: file assets into the bootstrap bucket, images into the bootstrap repository."""
    s3, ecr = d.client("s3"), d.client("ecr")
    d.client("ssm").put_parameter(Name=f"/cdk-bootstrap/{qualifier}/version", Value="30", Type="String", Overwrite=True)
    assets = json.loads((outdir / f"{stack}.assets.json").read_text())
    count = 0

    def here(text: str) -> str:
        return text.replace("${AWS::AccountId}", ACCOUNT).replace("${AWS::Region}", REGION)

    for asset in assets["files"].values():
        source = outdir / asset["source"]["path"]
        for destination in asset["destinations"].values():
            bucket = here(destination["bucketName"])
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=bucket)
            if asset["source"]["packaging"] == "file":
                body = source.read_bytes()
            else:
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
                    for path in sorted(source.rglob("*")):
                        if path.is_file():
                            archive.write(path, path.relative_to(source))
                body = buffer.getvalue()
            s3.put_object(Bucket=bucket, Key=destination["objectKey"], Body=body)
            count += 1
    for image in assets.get("dockerImages", {}).values():
        for destination in image["destinations"].values():
            repository = here(destination["repositoryName"])
            with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
                ecr.create_repository(repositoryName=repository)
            config = {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 2,
                "digest": "sha256:" + "0" * 64,
            }
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": config,  # an image built from the staged context (no Docker here): its manifest only
                "layers": [],
            }
            ecr.put_image(
                repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=destination["imageTag"]
            )
            count += 1
    return count


def _order(resources: dict[str, dict[str, Any]]) -> Iterator[str]:
    """Logical ids so that each comes after what it refers to or depends on."""
    done: set[str] = set()
    pending = dict(resources)
    while pending:
        ready = []
        for lid, resource in pending.items():
            if not ((_refs(resource.get("Properties", {})) | _depends(resource)) & (set(pending) - {lid})):
                ready.append(lid)
        assert ready, f"a reference cycle among {sorted(pending)}"
        for lid in sorted(ready):
            done.add(lid)
            del pending[lid]
            yield lid


def deploy(endpoint: str, template: dict[str, Any], outdir: Path, stack: str, qualifier: str) -> Deployed:
    """Deploy ``template`` into the moto server at ``endpoint``: assets, CloudFormation, then the APIs."""
    deployed = Deployed(endpoint)
    publish_assets(deployed, outdir, stack, qualifier)
    stripped, through_apis = split(template)
    unknown = {r["Type"] for r in through_apis.values()} - set(CREATORS)
    assert not unknown, f"no creator for {sorted(unknown)}"
    cfn = deployed.client("cloudformation")
    cfn.create_stack(StackName=stack, TemplateBody=json.dumps(stripped), Capabilities=["CAPABILITY_IAM"])
    status = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    assert status["StackStatus"] == "CREATE_COMPLETE", status.get("StackStatusReason")
    for summary in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]:
        assert summary["ResourceStatus"] == "CREATE_COMPLETE", summary
        lid, kind = summary["LogicalResourceId"], summary["ResourceType"]
        deployed.by_cloudformation[lid] = kind
        _cfn_attributes(deployed, lid, kind, summary["PhysicalResourceId"])
    assert set(deployed.by_cloudformation) == set(stripped["Resources"])
    buckets = {
        deployed.refs[lid]: deployed.resolve(r.get("Properties", {}))
        for lid, r in stripped["Resources"].items()
        if r["Type"] == "AWS::S3::Bucket"
    }
    for bucket, properties in buckets.items():
        _complete_bucket(deployed, bucket, properties)
    for lid in _order(through_apis):
        resource = through_apis[lid]
        properties = deployed.resolve(resource.get("Properties", {}))
        CREATORS[resource["Type"]](deployed, lid, properties, resource)
        deployed.by_apis[lid] = resource["Type"]
    for bucket, properties in buckets.items():  # S3 checks that the target's policy lets the log service write
        _bucket_logging(deployed, bucket, properties)
    return deployed

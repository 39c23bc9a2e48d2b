"""What only a real `cdk deploy` would catch, held to the synthesized templates: the account's API
Gateway logging role, the bootstrap qualifier, the deploy path without a terminal, the manifest's
version pin, request validation, payload limits, concurrency, API Gateway's own answers, IAM callers,
KMS reply queues and SnapStart's Regions."""

from __future__ import annotations

import json
import subprocess

import pytest
from aws_cdk.assertions import Match

from contract.limits import API_BODY_BYTES, SYNC_REQUEST_BYTES
from onnxfn.local import gateway_answers as answers
from stacks.config import ConfigError, load_config
from tests.infra.conftest import QUALIFIER, REPLY_KEY, ROOT, VARIANTS

PUSH_TO_LOGS = "AmazonAPIGatewayPushToCloudWatchLogs"


def _resources(s, kind):
    return s.template.find_resources(kind)


def test_the_accounts_api_gateway_logging_role_outlives_cdk_destroy(synth):
    s = synth("default")
    roles = {
        lid: r for lid, r in _resources(s, "AWS::IAM::Role").items() if PUSH_TO_LOGS in json.dumps(r["Properties"])
    }
    (role,) = roles.values()
    assert role["DeletionPolicy"] == "Retain" and role["UpdateReplacePolicy"] == "Retain"
    (account,) = _resources(s, "AWS::ApiGateway::Account").values()
    assert account["DeletionPolicy"] == "Retain"
    assert account["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": [next(iter(roles)), "Arn"]}


def test_a_custom_bootstrap_qualifier_synthesizes_clean(synth):
    s = synth("qualifier")  # cdk-nag would fail this synth on an unacknowledged finding
    text = "".join(f.read_text() for f in s.template_files)
    assert "hnb659fds" not in text and f"/cdk-bootstrap/{QUALIFIER}/version" in text
    report = json.loads((s.outdir / "validation-report.json").read_text())
    suppressed = [v["ruleName"] for r in report["pluginReports"] for v in r["suppressedViolations"]]
    assert any(f"cdk-{QUALIFIER}-assets" in name for name in suppressed)


def test_make_deploy_needs_no_terminal_with_approval_never_and_bootstrap_is_a_target():
    def dry_run(*args):
        return subprocess.run(
            ["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    assert "deploy --require-approval never" in dry_run("deploy", "APPROVAL=never")
    assert "deploy --require-approval broadening" in dry_run("deploy")
    assert "cdk --no-notices bootstrap" in dry_run("bootstrap")


def test_each_function_reads_the_manifest_version_its_deploy_uploaded(synth):
    s = synth("default")
    lookups = _resources(s, "Custom::AWS")
    uploads = _resources(s, "Custom::CDKBucketDeployment")
    for model in ("digits", "minilm"):
        (deployment,) = [
            lid for lid, r in uploads.items() if f"models/{model}/" in r["Properties"]["DestinationBucketKeyPrefix"]
        ]
        for role in ("api", "batch", "worker"):
            props = _resources(s, "AWS::Lambda::Function")[s.logical_id(s.stack.functions[model][role].function)]
            version = props["Properties"]["Environment"]["Variables"]["MANIFEST_VERSION_ID"]
            lookup_id, field = version["Fn::GetAtt"]
            assert field == "VersionId"
            lookup = lookups[lookup_id]
            call = json.dumps(lookup["Properties"]["Create"])
            assert "headObject" in call and f"models/{model}/" in call and "manifest.json" in call
            assert deployment in lookup["DependsOn"]  # read after the upload, never before


def test_no_request_validator_pretends_to_validate(synth):
    s = synth("default")
    s.template.resource_count_is("AWS::ApiGateway::RequestValidator", 0)
    assert all("RequestValidatorId" not in m["Properties"] for m in _resources(s, "AWS::ApiGateway::Method").values())
    report = json.loads((s.outdir / "validation-report.json").read_text())
    reasons = {v["ruleName"]: v["reason"] for r in report["pluginReports"] for v in r["suppressedViolations"]}
    assert "manifest" in reasons["AwsSolutions-APIG2"]  # where validation happens instead


def test_the_api_body_limit_is_what_fits_base64_in_lambdas_event():
    assert SYNC_REQUEST_BYTES == 6_291_456
    assert API_BODY_BYTES * 4 / 3 < SYNC_REQUEST_BYTES < (API_BODY_BYTES + 4096) * 4 / 3
    docs = (ROOT / "docs" / "api.md").read_text()
    assert f"{API_BODY_BYTES:,}" in docs and f"{SYNC_REQUEST_BYTES:,}" in docs


def test_concurrency_and_snapstart_are_the_api_functions_alone(synth):
    s = synth("options")
    functions = _resources(s, "AWS::Lambda::Function")

    def props(model, role):
        return functions[s.logical_id(s.stack.functions[model][role].function)]["Properties"]

    assert props("minilm", "api")["ReservedConcurrentExecutions"] == 10
    assert props("digits", "api")["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    for model in ("digits", "minilm"):
        for role in ("batch", "worker"):
            assert "ReservedConcurrentExecutions" not in props(model, role)
            assert "SnapStart" not in props(model, role)
            assert props(model, role)["Environment"]["Variables"]["LOAD_MODE"] == "eager"  # auto, small artifact
    provisioned = [
        a for a in _resources(s, "AWS::Lambda::Alias").values() if "ProvisionedConcurrencyConfig" in a["Properties"]
    ]
    assert len(provisioned) == 1 and s.logical_id(s.stack.functions["minilm"]["api"].function) in json.dumps(
        provisioned[0]
    )
    inbox = s.logical_id(s.stack.functions["minilm"]["batch"].alias)
    (mapping,) = [
        m["Properties"]
        for m in _resources(s, "AWS::Lambda::EventSourceMapping").values()
        if inbox in json.dumps(m["Properties"]["FunctionName"])
    ]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 3}


def test_reserved_concurrency_beyond_the_accounts_quota_fails_synth_with_the_figures():
    context = {
        "account_concurrency": 10,  # what new accounts are often given
        "models": {"digits": {"reserved_concurrency": 2}, "minilm": {}},
    }
    with pytest.raises(ConfigError, match=r"2 \(digits 2\) is more than the account allows.*at most 0"):
        load_config(context, ROOT)
    assert load_config({**context, "account_concurrency": 1000}, ROOT).account_concurrency == 1000


@pytest.mark.parametrize(("variant", "status"), [("default", "404"), ("options", "403")])
def test_api_gateways_own_answers_have_the_projects_json_error_shape(synth, variant, status):
    s = synth(variant)
    found = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in _resources(s, "AWS::ApiGateway::GatewayResponse").values()
    }
    assert {
        "MISSING_AUTHENTICATION_TOKEN",
        "INVALID_API_KEY",
        "THROTTLED",
        "REQUEST_TOO_LARGE",
        "DEFAULT_4XX",
        "DEFAULT_5XX",
    } <= set(found)
    assert found["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"] == status
    responses = {t: (p.get("StatusCode"), p["ResponseTemplates"]["application/json"]) for t, p in found.items()}
    for kind in found:
        error = answers.GatewayError(kind, 400, 'a "quoted"\nmessage', "X")
        code, _, body = answers.render(responses, error, "req-1")
        document = json.loads(body)  # every template stays JSON whatever API Gateway's message holds
        assert set(document) == {"error"} and document["error"]
    missing = json.loads(answers.render(responses, answers.MISSING_ROUTE, "r")[2])["error"]
    assert "digits" in missing and "minilm" in missing and "/v2/models/<name>/infer" in missing


def test_iam_callers_get_a_managed_policy_for_exactly_the_signed_routes(synth):
    s = synth("options")  # digits: auth iam; minilm: API key
    (policy,) = _resources(s, "AWS::IAM::ManagedPolicy").values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "execute-api:Invoke"
    resources = json.dumps(statement["Resource"])
    assert "/v2/models/digits" in resources and "/v1/models/digits:predict" in resources and "minilm" not in resources
    assert "digits*" not in resources  # exact routes: granting "resnet" must not grant "resnet50"
    assert "InvokePolicyArn" in s.template.to_json()["Outputs"]
    assert "InvokePolicyArn" not in synth("default").template.to_json()["Outputs"]


def test_kms_encrypted_reply_queues_get_their_keys_data_key_grant(synth):
    s = synth("options")
    worker_role = s.logical_id(s.stack.functions["minilm"]["worker"].function.role)
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in _resources(s, "AWS::IAM::Policy").values()
        if {"Ref": worker_role} in p["Properties"]["Roles"]
    ]
    statements = [st for group in policies for st in group]
    (kms,) = [st for st in statements if "kms:Decrypt" in json.dumps(st["Action"])]
    assert sorted(kms["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"] and kms["Resource"] == REPLY_KEY
    with pytest.raises(ConfigError, match="reply_queue_kms_key_arns"):
        load_config({"models": {"digits": {"reply_queue_kms_key_arns": ["alias/replies"]}}}, ROOT)


def _holds(node, region, partition):
    """Evaluate a CloudFormation rule condition for one Region and partition."""
    if isinstance(node, dict):
        (name, value), *_ = node.items()
        if name == "Ref":
            return {"AWS::Region": region, "AWS::Partition": partition}[value]
        if name == "Fn::And":
            return all(_holds(v, region, partition) for v in value)
        if name == "Fn::Not":
            return not _holds(value[0], region, partition)
        if name == "Fn::Equals":
            return _holds(value[0], region, partition) == _holds(value[1], region, partition)
        if name == "Fn::Contains":
            return _holds(value[1], region, partition) in value[0]
    return node


def test_snapstart_stops_the_deploy_where_the_region_does_not_offer_it(synth):
    rules = synth("options").template.to_json()["Rules"]
    (assertion,) = rules["SnapStartRegion"]["Assertions"]
    check = assertion["Assert"]
    assert _holds(check, "us-east-1", "aws") and _holds(check, "eu-west-1", "aws")
    assert not _holds(check, "ap-east-2", "aws") and not _holds(check, "ap-southeast-6", "aws")
    assert not _holds(check, "cn-north-1", "aws-cn")
    assert "snapstart: false" in assertion["AssertDescription"]
    assert "SnapStartRegion" not in synth("default").template.to_json().get("Rules", {})


def test_snapstart_in_a_known_region_without_it_fails_synth():
    import aws_cdk as cdk

    from app import cdk_json_context
    from stacks.onnxfn_stack import OnnxfnStack

    app = cdk.App(context={**cdk_json_context(), **VARIANTS["options"]})
    config = load_config(app.node.try_get_context("onnxfn"), ROOT)
    with pytest.raises(ConfigError, match="snapstart: true is not allowed in ap-east-2"):
        OnnxfnStack(app, "Taipei", config=config, env=cdk.Environment(account="123456789012", region="ap-east-2"))


def test_event_source_scaling_is_set_for_both_queues(synth):
    s = synth("default")
    for mapping in _resources(s, "AWS::Lambda::EventSourceMapping").values():
        assert mapping["Properties"]["ScalingConfig"] == {"MaximumConcurrency": 5}
    s.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping", {"BatchSize": 1, "ScalingConfig": Match.any_value()}
    )

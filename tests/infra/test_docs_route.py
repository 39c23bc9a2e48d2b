"""GET /swagger by the ``docs`` setting: public (no key, no IAM), private (the first model's auth), off."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match

from app import cdk_json_context


def _swagger_resource_id(s):
    (resource_id,) = s.template.find_resources("AWS::ApiGateway::Resource", {"Properties": {"PathPart": "swagger"}})
    return resource_id


def _methods(s, *, swagger: bool):
    on_swagger = {"Ref": _swagger_resource_id(s)}
    where = on_swagger if swagger else Match.not_(on_swagger)
    return s.template.find_resources("AWS::ApiGateway::Method", {"Properties": {"ResourceId": where}})


def test_cdk_json_publishes_the_docs():
    assert cdk_json_context()["onnxfn"]["docs"] == "public"


def test_public_docs_need_no_key_while_model_routes_keep_theirs(synth):
    s = synth("default")
    assert s.stack.config.docs == "public"
    s.template.has_resource_properties(
        "AWS::ApiGateway::Method",
        {
            "HttpMethod": "GET",
            "ResourceId": {"Ref": _swagger_resource_id(s)},
            "ApiKeyRequired": False,
            "AuthorizationType": "NONE",
        },
    )
    others = _methods(s, swagger=False)
    assert len(others) == 13  # /v2, two health routes, then five per model
    assert all(m["Properties"]["ApiKeyRequired"] is True for m in others.values())
    assert all(m["Properties"]["AuthorizationType"] == "NONE" for m in others.values())


def test_public_docs_with_iam_models(synth):
    s = synth("iam")
    (swagger,) = _methods(s, swagger=True).values()
    assert swagger["Properties"]["AuthorizationType"] == "NONE"
    assert swagger["Properties"]["ApiKeyRequired"] is False
    others = _methods(s, swagger=False).values()
    assert others and all(m["Properties"]["AuthorizationType"] == "AWS_IAM" for m in others)
    s.template.resource_count_is("AWS::ApiGateway::ApiKey", 0)


def test_private_docs_take_the_first_models_auth(synth):
    s = synth("options")  # docs: private; digits (the first model) is IAM, minilm keeps its API key
    (swagger,) = _methods(s, swagger=True).values()
    assert swagger["Properties"]["AuthorizationType"] == "AWS_IAM"
    assert swagger["Properties"]["ApiKeyRequired"] is False
    digits = s.logical_id(s.stack.functions["digits"]["api"].alias)
    assert digits in json.dumps(swagger["Properties"]["Integration"])


def test_docs_off_leaves_no_swagger_route(synth):
    s = synth("docs_off")
    assert s.stack.api.docs_method is None
    s.template.resource_properties_count_is("AWS::ApiGateway::Resource", {"PathPart": "swagger"}, 0)
    s.template.resource_properties_count_is("AWS::ApiGateway::Resource", {"PathPart": "v2"}, 1)
    methods = s.template.find_resources("AWS::ApiGateway::Method")
    assert len(methods) == 13 and all(m["Properties"]["ApiKeyRequired"] is True for m in methods.values())


def test_public_docs_findings_are_acknowledged_on_that_method_alone(synth):
    """APIG4 and COG4, and nothing else, are accepted at GET /swagger, with the written reason."""
    for variant in ("default", "iam"):
        s = synth(variant)
        method_path = s.stack.api.docs_method.node.path
        report = json.loads((s.outdir / "validation-report.json").read_text())
        (nag,) = [r for r in report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
        at_method = [f for f in nag["suppressedViolations"] if f["acknowledgedAt"] == method_path]
        assert sorted(f["ruleName"] for f in at_method) == ["AwsSolutions-APIG4", "AwsSolutions-COG4"], variant
        for finding in at_method:
            assert [c["constructPath"] for c in finding["violatingConstructs"]] == [f"{method_path}/Resource"]
            assert "GET /swagger is public on purpose" in finding["reason"]


def _environments(s):
    return {
        lid: r["Properties"].get("Environment", {}).get("Variables", {})
        for lid, r in s.template.find_resources("AWS::Lambda::Function").items()
        if "MODEL_NAME" in r["Properties"].get("Environment", {}).get("Variables", {})
    }


def test_the_docs_function_reads_the_catalog_of_every_model(synth):
    """The first model's API function serves /swagger: it alone gets the catalog's key and may read that
    one object, which the deploy uploads with every model's auth and manifest. The key is fixed, so a
    model added or changed rewrites the object, not that function's configuration."""
    from contract.catalog import CATALOG_FILE, CATALOG_KEY, decode

    s = synth("options")
    key = CATALOG_KEY
    docs_function = s.logical_id(s.stack.functions["digits"]["api"].function)
    readers = {lid for lid, variables in _environments(s).items() if "CATALOG_KEY" in variables}
    assert readers == {docs_function} and _environments(s)[docs_function]["CATALOG_KEY"] == key
    role = s.logical_id(s.stack.functions["digits"]["api"].function.role)
    grants = [
        statement
        for policy in s.template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if key in json.dumps(statement)
    ]
    assert [g["Action"] for g in grants] == ["s3:GetObject"] and f"/{key}" in json.dumps(grants[0]["Resource"])
    (upload,) = s.template.find_resources(
        "Custom::CDKBucketDeployment", {"Properties": {"DestinationBucketKeyPrefix": "catalog/"}}
    ).values()
    (asset_key,) = upload["Properties"]["SourceObjectKeys"]
    staged = s.outdir / f"asset.{asset_key.removesuffix('.zip')}" / CATALOG_FILE
    entries = decode(staged.read_bytes())
    assert [(e.name, e.auth) for e in entries] == [("digits", "iam"), ("minilm", "api_key")]


def test_docs_off_reads_no_catalog(synth):
    s = synth("docs_off")
    assert not [v for v in _environments(s).values() if "CATALOG_KEY" in v]

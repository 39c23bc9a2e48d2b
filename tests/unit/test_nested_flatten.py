"""assembly.flatten: nested stacks read into their parent as CloudFormation resolves them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxfn.local.assembly import AssemblyError, flatten


def _app(tmp_path: Path, nested: dict, passed: dict | None = None, outer: dict | None = None) -> dict:
    (tmp_path / "Inner.nested.template.json").write_text(json.dumps(nested))
    stack = {
        "Type": "AWS::CloudFormation::Stack",
        "Properties": {"TemplateURL": "https://x/abc.json", "Parameters": passed or {}},
        "Metadata": {"aws:asset:path": "Inner.nested.template.json"},
        "DependsOn": ["Upload"],
        **(outer or {}),
    }
    return {
        "Resources": {
            "Bucket": {"Type": "AWS::S3::Bucket"},
            "Upload": {"Type": "Custom::Upload"},
            "Inner": stack,
            "Watcher": {
                "Type": "Custom::Watch",
                "Properties": {"Target": {"Fn::GetAtt": ["Inner", "Outputs.QueueArn"]}},
                "DependsOn": "Inner",
            },
            "Dashboard": {"Type": "Custom::Dash", "Properties": {"Ref2": {"Fn::GetAtt": "Inner.Outputs.QueueArn"}}},
        },
        "Outputs": {"Bucket": {"Value": {"Ref": "Bucket"}}},
    }


NESTED = {
    "Parameters": {"BucketRef": {"Type": "String"}, "Stage": {"Type": "String", "Default": "prod"}},
    "Resources": {
        "Queue": {"Type": "AWS::SQS::Queue"},
        "Fn": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Bucket": {"Ref": "BucketRef"},
                "Arn": {"Fn::Sub": "arn:aws:s3:::${BucketRef}/${Stage}/${Queue.Arn}"},
            },
            "DependsOn": ["Queue"],
        },
        "CDKMetadata": {"Type": "AWS::CDK::Metadata"},
    },
    "Outputs": {"QueueArn": {"Value": {"Fn::GetAtt": ["Queue", "Arn"]}}},
}


def test_parameters_outputs_and_waits_resolve_as_cloudformation_does(tmp_path):
    flat = flatten(_app(tmp_path, NESTED, {"BucketRef": {"Ref": "Bucket"}}), tmp_path)
    resources = flat["Resources"]
    assert "Inner" not in resources and "CDKMetadata" not in resources  # the parent's own report stays
    fn = resources["Fn"]
    assert fn["Properties"]["Bucket"] == {"Ref": "Bucket"}  # the value the parent passes
    sub = fn["Properties"]["Arn"]["Fn::Sub"]
    assert sub[1] == {"BucketRef": {"Ref": "Bucket"}, "Stage": "prod"}  # a default where none is passed
    assert set(fn["DependsOn"]) == {"Queue", "Upload"}  # its own wait, and the nested stack's
    assert resources["Watcher"]["Properties"]["Target"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert resources["Dashboard"]["Properties"]["Ref2"] == {"Fn::GetAtt": ["Queue", "Arn"]}  # string form
    assert set(resources["Watcher"]["DependsOn"]) == {"Queue", "Fn"}  # waits for every nested resource
    assert flat["Outputs"] == {"Bucket": {"Value": {"Ref": "Bucket"}}}


def test_a_parameter_not_passed_and_without_default_is_an_error(tmp_path):
    with pytest.raises(AssemblyError, match=r"passes no value for \['BucketRef'\]"):
        flatten(_app(tmp_path, NESTED), tmp_path)


def test_a_logical_id_in_two_templates_is_an_error(tmp_path):
    clash = {**NESTED, "Resources": {**NESTED["Resources"], "Bucket": {"Type": "AWS::S3::Bucket"}}}
    with pytest.raises(AssemblyError, match="logical id Bucket is in two templates"):
        flatten(_app(tmp_path, clash, {"BucketRef": "b"}), tmp_path)


def test_what_cannot_be_read_in_is_refused_not_dropped(tmp_path):
    mapped = {**NESTED, "Mappings": {"M": {"a": {"b": "c"}}}}
    with pytest.raises(AssemblyError, match="Mappings"):
        flatten(_app(tmp_path, mapped, {"BucketRef": "b"}), tmp_path)
    with pytest.raises(AssemblyError, match="Condition"):
        flatten(_app(tmp_path, NESTED, {"BucketRef": "b"}, {"Condition": "IsProd"}), tmp_path)


def test_a_template_without_nested_stacks_is_returned_as_it_is(tmp_path):
    template = {"Resources": {"Bucket": {"Type": "AWS::S3::Bucket"}}}
    assert flatten(template, tmp_path) is template

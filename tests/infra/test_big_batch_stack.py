"""The big-batch state machine each model deploys: its definition, its least-privilege role, the
batch function's hand-off to it, its failed executions' queue and alarms (aws_cdk.assertions)."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from contract import big_batch
from stacks.config import ConfigError, load_config
from tests.infra.conftest import ROOT


def _machine(synth, variant: str, model: str):
    s = synth(variant)
    deployment = s.stack.model_stacks[model].deployment
    machine = deployment.big_batch
    template = s.model_template(model)
    resource = template.to_json()["Resources"][s.logical_id(machine.state_machine)]
    return s, deployment, machine, template, resource


def _definition(resource) -> dict:
    return json.loads(resource["Properties"]["DefinitionString"])


def test_a_distributed_map_per_format_reads_the_exact_version_and_batches_for_the_batch_function(synth):
    s, deployment, machine, _, resource = _machine(synth, "default", "digits")
    definition = _definition(resource)
    assert definition == machine.definition
    states = definition["States"]
    assert [c["StringEquals"] for c in states["Format"]["Choices"]] == ["jsonl", "csv"]
    jsonl, csv_map = states["ScoreJsonl"], states["ScoreCsv"]
    for state in (jsonl, csv_map):
        assert state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
        assert state["ItemReader"]["Parameters"] == {
            "Bucket.$": "$.bucket",
            "Key.$": "$.key",
            "VersionId.$": "$.version",
        }
        assert state["ItemSelector"] == {"index.$": "$$.Map.Item.Index", "row.$": "$$.Map.Item.Value"}
        assert state["ItemBatcher"]["BatchInput"] == {f"{f}.$": f"$.{f}" for f in big_batch.RUN_FIELDS}
        assert state["ItemBatcher"]["MaxInputBytesPerBatch"] <= 256 * 1024
        assert state["ItemBatcher"]["MaxItemsPerBatch"] == big_batch.DEFAULT_ITEMS_PER_BATCH
        assert state["ResultPath"] is None  # the run's input goes on to Assemble
        assert state["Catch"][0]["Next"] == "AssembleFailed"
        score = state["ItemProcessor"]["States"]["ScoreBatch"]
        assert score["Parameters"]["FunctionName"] == "${BatchFunction}"
        assert [r["ErrorEquals"][0] for r in score["Retry"]] == [
            "InvalidInput",  # never retried: a malformed batch fails the same way again
            "Lambda.ServiceException",
            "States.TaskFailed",
        ]
        assert score["Retry"][0]["MaxAttempts"] == 0
    assert jsonl["ItemReader"]["ReaderConfig"] == {"InputType": "JSONL"}
    # CSV rows are read with given headers, one per pixel and one more (a wider row keeps a cell to be
    # refused by): a first row of data stays data.
    assert csv_map["ItemReader"]["ReaderConfig"]["CSVHeaderLocation"] == "GIVEN"
    assert csv_map["ItemReader"]["ReaderConfig"]["CSVHeaders"] == big_batch.csv_headers(65)
    assert states["Assemble"]["Parameters"]["Payload"] == {"assemble.$": "$"} and states["Assemble"]["End"]
    assert states["AssembleFailed"]["Next"] == "Failed" and states["Failed"]["Type"] == "Fail"
    assert resource["Properties"]["DefinitionSubstitutions"] == {
        "BatchFunction": {"Ref": s.logical_id(deployment.batch.alias)}
    }
    assert resource["Properties"]["TracingConfiguration"] == {"Enabled": True}
    assert resource["Properties"]["LoggingConfiguration"]["Level"] == "ALL"


def test_a_text_model_reads_json_lines_only(synth):
    _, _, _, _, resource = _machine(synth, "default", "minilm")
    states = _definition(resource)["States"]
    assert "ScoreCsv" not in states and [c["StringEquals"] for c in states["Format"]["Choices"]] == ["jsonl"]


def test_the_batch_function_starts_that_state_machine_and_nothing_else(synth):
    s, deployment, machine, template, resource = _machine(synth, "default", "digits")
    arn = s.stack.resolve(machine.state_machine_arn)
    function = template.to_json()["Resources"][s.logical_id(deployment.batch.function)]["Properties"]
    variables = function["Environment"]["Variables"]
    assert variables["BIG_BATCH_STATE_MACHINE"] == arn
    assert variables["BIG_BATCH_FORMATS"] == "jsonl,csv"
    assert "BIG_BATCH_ROWS" not in variables and "BIG_BATCH_BYTES" not in variables  # measured, not set
    # the ARN is built from the state machine's name, so the function does not depend on it
    assert arn["Fn::Join"][1][-1] == f":stateMachine:{resource['Properties']['StateMachineName']}"
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with([{"Action": "states:StartExecution", "Effect": "Allow", "Resource": arn}])
            }
        },
    )
    starts = [
        st
        for policy in template.find_resources("AWS::IAM::Policy").values()
        for st in policy["Properties"]["PolicyDocument"]["Statement"]
        if "states:StartExecution" in json.dumps(st["Action"])
    ]
    assert all(st["Resource"] == arn for st in starts) and len(starts) == 2  # the function's and the Map's own
    # it may look up that state machine's executions (was this version handed off already?), no others
    executions = s.stack.resolve(machine.executions_arn)
    assert executions["Fn::Join"][1][-1] == f":execution:{resource['Properties']['StateMachineName']}:*"
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [{"Action": "states:DescribeExecution", "Effect": "Allow", "Resource": executions}]
                )
            }
        },
    )


def test_the_state_machine_role_reads_the_inbox_invokes_the_batch_function_and_runs_its_children(synth):
    s, deployment, machine, template, resource = _machine(synth, "default", "digits")
    role_id = resource["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
    ]
    (statements,) = policies
    actions = {json.dumps(st["Action"]): st["Resource"] for st in statements}
    assert json.loads(next(a for a in actions if "s3:" in a)) == ["s3:GetObject", "s3:GetObjectVersion"]
    s3_resource = json.dumps(next(r for a, r in actions.items() if "s3:" in a))
    assert "/inbox/digits/*" in s3_resource
    assert actions['"lambda:InvokeFunction"'] == {"Ref": s.logical_id(deployment.batch.alias)}
    every = {a for st in statements for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    assert not any(a.endswith(":*") or a == "*" for a in every)
    assert not {"s3:PutObject", "s3:DeleteObject", "lambda:*"} & every


def test_failed_executions_go_to_a_queue_and_raise_alarms_in_the_models_health(synth):
    s, deployment, machine, template, _ = _machine(synth, "default", "digits")
    queue_id = s.logical_id(machine.failed_executions)
    rule = next(iter(template.find_resources("AWS::Events::Rule").values()))["Properties"]
    assert rule["EventPattern"]["detail"]["status"] == ["FAILED", "TIMED_OUT", "ABORTED"]
    assert rule["EventPattern"]["detail"]["stateMachineArn"] == [s.stack.resolve(machine.state_machine_arn)]
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    queue = template.to_json()["Resources"][queue_id]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    names = {lid for lid in alarms if "BigBatch" in lid}
    assert any("ExecutionsFailed" in n for n in names) and any("FailedExecutions" in n for n in names)
    health = next(iter(template.find_resources("AWS::CloudWatch::CompositeAlarm").values()))
    rule_text = json.dumps(health["Properties"]["AlarmRule"])
    assert all(n in rule_text for n in names)


def test_settings_reach_the_definition_and_the_hand_off_and_false_turns_it_off(synth):
    s, deployment, machine, template, resource = _machine(synth, "options", "digits")
    state = _definition(resource)["States"]["ScoreJsonl"]
    assert state["ItemBatcher"]["MaxItemsPerBatch"] == 500
    assert state["MaxConcurrency"] == 4 and state["ToleratedFailurePercentage"] == 5
    function = template.to_json()["Resources"][s.logical_id(deployment.batch.function)]["Properties"]
    assert function["Environment"]["Variables"]["BIG_BATCH_ROWS"] == "50000"
    assert function["Environment"]["Variables"]["BIG_BATCH_BYTES"] == "104857600"
    minilm = s.stack.model_stacks["minilm"]
    assert minilm.deployment.big_batch is None
    minilm_template = s.model_template("minilm")
    assert minilm_template.find_resources("AWS::StepFunctions::StateMachine") == {}
    batch = minilm_template.to_json()["Resources"][s.logical_id(minilm.deployment.batch.function)]["Properties"]
    assert not any(k.startswith("BIG_BATCH") for k in batch["Environment"]["Variables"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "expected an object or false"),
        ({"tolerated_failure_percent": 101}, "tolerated_failure_percent: 101 is not allowed"),
        ({"items_per_batch": 0}, "items_per_batch: 0 is not allowed"),
        ({"rows_max": 1}, "rows_max: unknown setting"),
    ],
)
def test_wrong_big_batch_settings_are_named(value, message):
    context = {"models": {"digits": {"big_batch": value}}}
    with pytest.raises(ConfigError, match=message):
        load_config(context, ROOT)


def test_the_command_line_threshold_keeps_each_models_other_settings_and_an_off_stays_off():
    from app import _force_big_batch_rows

    context = {
        "defaults": {"memory_mb": 512},
        "models": {"digits": {"big_batch": {"items_per_batch": 50}}, "minilm": {"big_batch": False}, "x": None},
    }
    _force_big_batch_rows(context, "1000")
    assert context["defaults"]["big_batch"] == {"rows": 1000} and context["defaults"]["memory_mb"] == 512
    assert context["models"]["digits"]["big_batch"] == {"items_per_batch": 50, "rows": 1000}
    assert context["models"]["minilm"]["big_batch"] is False
    assert context["models"]["x"]["big_batch"] == {"rows": 1000}
    with pytest.raises(ConfigError, match="onnxfn:big_batch_rows: 'many' is not allowed"):
        _force_big_batch_rows({}, "many")


def test_the_bucket_expires_parts_never_assembled(synth):
    s = synth("default")
    bucket = s.template.to_json()["Resources"][s.logical_id(s.stack.storage.bucket)]["Properties"]
    (rule,) = [r for r in bucket["LifecycleConfiguration"]["Rules"] if r.get("Id") == "BigBatchParts"]
    assert rule["TagFilters"] == [{"Key": big_batch.PART_TAG[0], "Value": big_batch.PART_TAG[1]}]
    assert rule["ExpirationInDays"] == big_batch.PART_DAYS and rule["Status"] == "Enabled"

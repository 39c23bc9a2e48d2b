"""Many models in one app: the app's stack and each model's nested stack stay within CloudFormation's,
API Gateway's and CloudWatch's limits; cdk-nag and cfn-lint stay clean at sixty models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.scale import copies
from contract.limits import ALARM_STATUS_ALARMS, API_RESOURCES, DASHBOARD_WIDGETS, STACK_RESOURCES, TEMPLATE_BYTES
from onnxfn.local.assembly import flatten, nested_templates
from tests.infra.conftest import ROOT

MODELS = 60


@pytest.fixture(scope="module")
def sixty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """The app of sixty models, synthesized in-process with cdk-nag (a finding fails the synth)."""
    from app import build_app

    artifacts = tmp_path_factory.mktemp("sixty-artifacts")
    names = copies(artifacts, MODELS)
    outdir = tmp_path_factory.mktemp("sixty-out")
    app, stack = build_app(
        {"onnxfn": {"artifacts_dir": str(artifacts), "models": {name: {} for name in names}}}, outdir=str(outdir)
    )
    app.synth()
    return stack, outdir


def _widgets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The widgets of a dashboard's body (its references replaced by a placeholder string)."""
    body = dashboard["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    text = "".join(part if isinstance(part, str) else "ref" for part in parts)
    return list(json.loads(text)["widgets"])


def test_synth_counts_each_templates_resources(synth):
    s = synth("default")
    counts = s.stack.resource_counts()
    assert counts.pop(s.stack.stack_name) == len(s.own_template.to_json()["Resources"])
    for model, count in counts.items():
        assert count == len(s.model_template(model).to_json()["Resources"])
    line = f"resources: {len(s.own_template.to_json()['Resources'])} in the app's stack, at most {max(counts.values())}"
    assert any(b.startswith(line) and b.endswith("(2 models)") for b in s.stack.budget), s.stack.budget


def test_a_template_over_the_limit_fails_synth_with_the_count_not_a_traceback(monkeypatch):
    """The limit is CloudFormation's 500; held at 60 here, today's two models exceed it in the app's stack."""
    import aws_cdk as cdk

    from app import cdk_json_context
    from stacks import onnxfn_stack
    from stacks.config import ConfigError, load_config

    monkeypatch.setattr(onnxfn_stack, "STACK_RESOURCES", 60)
    config = load_config(cdk_json_context()["onnxfn"], ROOT)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"resources: \d+ in the app's stack, .* of CloudFormation's 60 .*too many"):
        onnxfn_stack.OnnxfnStack(cdk.App(context=cdk_json_context()), "Small", config=config)


def test_sixty_models_every_template_within_cloudformations_limits(sixty):
    stack, outdir = sixty
    own_file = outdir / f"{stack.stack_name}.template.json"
    own = json.loads(own_file.read_text())
    files = [own_file, *nested_templates(own, outdir).values()]
    assert len(files) == MODELS + 1
    for file in files:
        template = json.loads(file.read_text())
        assert len(template["Resources"]) < STACK_RESOURCES, file.name
        assert file.stat().st_size < TEMPLATE_BYTES, file.name
        assert len(template.get("Parameters", {})) <= 200 and len(template.get("Outputs", {})) <= 200
    budget = next(line for line in stack.budget if line.startswith("resources:"))
    assert "past 80%" not in budget and f"({MODELS} models)" in budget
    report = json.loads((outdir / "validation-report.json").read_text())
    (nag,) = report["pluginReports"]
    assert nag["conclusion"] == "success" and nag["violations"] == []
    # the outputs of a one-stack app, unchanged
    assert {"ApiUrl", "ApiKeyId", "BucketName", "DashboardName", "AlarmTopicArn"} <= set(own["Outputs"])


def test_sixty_models_one_api_deployed_after_every_models_routes(sixty):
    stack, outdir = sixty
    own = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    flat = flatten(own, outdir)["Resources"]
    assert sum(r["Type"] == "AWS::ApiGateway::RestApi" for r in flat.values()) == 1
    (deployment,) = [r for r in flat.values() if r["Type"] == "AWS::ApiGateway::Deployment"]
    methods = [lid for lid, r in flat.items() if r["Type"] == "AWS::ApiGateway::Method"]
    assert len(methods) == 4 + 5 * MODELS and set(methods) <= set(deployment["DependsOn"])
    paths = sum(r["Type"] == "AWS::ApiGateway::Resource" for r in flat.values())
    assert paths == 8 + 5 * MODELS
    api_line = next(line for line in stack.budget if line.startswith("API resources:"))
    assert api_line.startswith(f"API resources: {paths} of API Gateway's default quota of {API_RESOURCES}")
    assert ("over it" in api_line) == (paths > API_RESOURCES)


def test_sixty_models_dashboards_within_cloudwatchs_limits(sixty):
    stack, outdir = sixty
    flat = flatten(json.loads((outdir / f"{stack.stack_name}.template.json").read_text()), outdir)["Resources"]
    dashboards = [r for r in flat.values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    assert len(dashboards) == MODELS + 1
    health = {lid for lid, r in flat.items() if r["Type"] == "AWS::CloudWatch::CompositeAlarm"}
    assert len(health) == MODELS
    overview = json.dumps(flat[stack.resolve(stack.get_logical_id(stack.monitoring.dashboard.node.default_child))])
    assert all(alarm in overview for alarm in health)
    for dashboard in dashboards:
        widgets = _widgets(dashboard)
        assert len(widgets) <= DASHBOARD_WIDGETS
        for widget in widgets:
            if widget["type"] == "alarm":
                assert len(widget["properties"]["alarms"]) <= ALARM_STATUS_ALARMS


def test_sixty_models_cfn_lint_clean(sixty):
    stack, outdir = sixty
    own_file = outdir / f"{stack.stack_name}.template.json"
    files = [own_file, *nested_templates(json.loads(own_file.read_text()), outdir).values()]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--config-file", str(ROOT / ".cfnlintrc.yaml")]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_serve_with_sixty_models_starts_no_function_and_serves_any(sixty, tmp_path):
    """Workers start on demand: S3's test events (one an inbox) start none; any model answers."""
    import time

    from tests.serve.conftest import _serve

    _, outdir = sixty
    with _serve(outdir, tmp_path, []) as served:
        assert len(served.state["models"]) == MODELS
        deadline = time.monotonic() + 60
        while served.output().count("S3 test event") < MODELS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert served.output().count("S3 test event: deleted without starting the function") == MODELS
        assert served.workers() == []  # nothing started yet
        body = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]})
        for model in ("digits59", "digits00"):
            reply = served.client.request("POST", f"/v2/models/{model}/infer", body)
            assert reply.status == 200, reply.body
        assert len(served.workers()) == 2  # one API function each, nothing else
        docs = json.loads(served.client.request("GET", "/swagger?format=json", api_key=False).body)
        assert {f"/v2/models/digits{i:02d}/infer" for i in range(MODELS)} <= set(docs["paths"])


def test_a_change_to_one_models_routes_in_its_stack_redeploys_the_api(synth, tmp_path):
    """The API's deployment snapshots the methods: its logical id carries every model's methods, those
    in the models' stacks too, so a change there makes CloudFormation deploy the stage anew; a change
    that leaves the routes alone keeps it."""
    from aws_cdk.assertions import Template

    from app import build_app
    from tests.infra.conftest import VARIANTS

    base = VARIANTS["options"]["onnxfn"]  # digits (the first model) signed, minilm keyed

    def deployment(minilm: dict[str, Any], folder: str) -> str:
        context = {**base, "models": {**base["models"], "minilm": {**base["models"]["minilm"], **minilm}}}
        _, stack = build_app({"onnxfn": context}, outdir=str(tmp_path / folder))
        resources = Template.from_stack(stack).to_json()["Resources"]
        (lid,) = [k for k, v in resources.items() if v["Type"] == "AWS::ApiGateway::Deployment"]
        return lid

    before = deployment({}, "same")
    assert deployment({"memory_mb": 2048}, "memory") == before  # the routes unchanged
    assert deployment({"auth": "iam"}, "signed") != before  # minilm's methods, in its own stack, changed

"""What `cdk deploy` would create, asserted on the synthesized templates (aws_cdk.assertions)."""

from __future__ import annotations

import hashlib
import json

import pytest
from aws_cdk.assertions import Match

from contract.catalog import CATALOG_KEY
from tests.infra.conftest import ROOT

HANDLERS = ("handlers.api.lambda_handler", "handlers.s3_batch.lambda_handler", "handlers.queue_worker.lambda_handler")


def _our_functions(template):
    return {
        lid: res
        for lid, res in template.find_resources("AWS::Lambda::Function").items()
        if (res["Properties"].get("Handler") in HANDLERS) or res["Properties"].get("PackageType") == "Image"
    }


def test_model_bucket_is_private_versioned_encrypted_logged(synth):
    s = synth("default")
    bucket_id = s.logical_id(s.stack.storage.bucket)
    bucket = s.template.to_json()["Resources"][bucket_id]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": s.logical_id(s.stack.storage.access_logs)}
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 30 for r in rules)
    s.template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            },
        },
    )


def _prefix(s, model):
    return next(m.prefix for m in s.stack.config.models if m.name == model)


def test_artifacts_are_uploaded_under_their_prefix(synth):
    s = synth("default")
    for model in ("digits", "minilm"):
        prefix = _prefix(s, model)
        sha = hashlib.sha256((ROOT / "model_artifacts" / model / "manifest.json").read_bytes()).hexdigest()
        assert prefix == f"models/{model}/1-{sha[:12]}/"  # a rebuilt artifact gets a new prefix
        s.template.has_resource_properties(
            "Custom::CDKBucketDeployment",
            {"DestinationBucketKeyPrefix": prefix, "Prune": False},
        )


def test_one_function_per_model_and_entry_point_pinned_to_its_artifact(synth):
    s = synth("default")
    functions = _our_functions(s.template)
    assert len(functions) == 6
    for model in ("digits", "minilm"):
        manifest = (ROOT / "model_artifacts" / model / "manifest.json").read_bytes()
        for role, handler in zip(("api", "batch", "worker"), HANDLERS, strict=True):
            fn = s.stack.functions[model][role]
            props = functions[s.logical_id(fn.function)]["Properties"]
            assert props["Handler"] == handler
            assert props["Runtime"] == "python3.12"
            assert props["Architectures"] == ["x86_64"]
            # X-Ray off by default: its SDK's import is the largest cost of a cold start
            assert props["TracingConfig"] == {"Mode": "PassThrough"}
            assert props["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == "true"
            assert len(props["Layers"]) == 1
            env = props["Environment"]["Variables"]
            assert env["MODEL_NAME"] == model
            assert env["MODEL_PREFIX"] == _prefix(s, model)
            assert env["MANIFEST_SHA256"] == hashlib.sha256(manifest).hexdigest()
            assert env["MODEL_BUCKET"] == {"Ref": s.logical_id(s.stack.storage.bucket)}
            assert env["POWERTOOLS_SERVICE_NAME"] == f"onnxfn-{model}"
            assert env["POWERTOOLS_METRICS_NAMESPACE"] == "onnxfn"
            assert env["LOAD_MODE"] == "eager"  # auto: both demo artifacts fit the init window
            assert env.get("API_AUTH") == ("api_key" if role == "api" else None)  # only the API describes auth
    digits_api = functions[s.logical_id(s.stack.functions["digits"]["api"].function)]["Properties"]
    assert digits_api["MemorySize"] == 512 and digits_api["Timeout"] == 10
    s.template.resource_count_is("AWS::Lambda::Alias", 6)
    s.template.has_resource_properties("AWS::Lambda::Alias", {"Name": "live"})
    (layer,) = _our_layers(s.template).values()
    assert layer["Properties"]["CompatibleArchitectures"] == ["x86_64"]
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    s.template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 30})


def _our_layers(template):
    return {
        lid: res
        for lid, res in template.find_resources("AWS::Lambda::LayerVersion").items()
        if res["Properties"].get("Description", "").startswith("onnxfn dependencies")
    }


def _statements_of(s, function):
    role_id = s.logical_id(function.role)
    statements = []
    for policy in s.template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def _object_grants(s, statements):
    bucket_arn = {"Fn::GetAtt": [s.logical_id(s.stack.storage.bucket), "Arn"]}
    grants = {}
    for statement in statements:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if not all(a.startswith("s3:") for a in actions):
            continue  # the batch function's states:StartExecution (tests/infra/test_big_batch_stack.py)
        for resource in resources:
            if isinstance(resource, dict) and "Fn::Join" in resource:
                parts = resource["Fn::Join"][1]
                assert parts[0] == bucket_arn, parts
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                grants.setdefault(parts[1], set()).update(actions)
    return grants


@pytest.mark.parametrize("model", ["digits", "minilm"])
def test_iam_is_scoped_to_the_models_own_prefixes(synth, model):
    s = synth("default")
    fns = s.stack.functions[model]
    read = {"s3:GetObject", "s3:GetObjectVersion"}
    artifact = f"/{_prefix(s, model)}*"
    expected = {
        "api": {artifact: read},
        "batch": {
            artifact: read,
            f"/inbox/{model}/*": read,
            f"/outbox/{model}/*": {
                "s3:GetObject",
                "s3:PutObject",
                "s3:PutObjectTagging",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
            },
        },
        "worker": {artifact: read, f"/requests/{model}/*": read, f"/results/{model}/*": {"s3:PutObject"}},
    }
    if model == s.stack.config.models[0].name:  # its API function serves /swagger: the API's catalog too
        expected["api"][f"/{CATALOG_KEY}"] = {"s3:GetObject"}
    listing = {"api": None, "batch": [f"outbox/{model}/*"], "worker": [f"requests/{model}/*"]}
    for role, grants in expected.items():
        statements = _statements_of(s, fns[role].function)
        assert _object_grants(s, statements) == grants, role
        lists = [st for st in statements if st["Action"] == "s3:ListBucket"]
        if listing[role] is None:
            assert lists == []
        else:
            (only,) = lists
            assert only["Condition"] == {"StringLike": {"s3:prefix": listing[role]}}
        for statement in statements:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert not any(a in ("s3:*", "*") for a in actions)
            if statement["Resource"] == "*":
                assert set(actions) <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_rest_api_routes_auth_logging_and_binary(synth):
    s = synth("default")
    s.template.has_resource_properties("AWS::ApiGateway::RestApi", {"BinaryMediaTypes": ["*/*"]})
    s.template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": "prod",
            "TracingEnabled": True,
            "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}),
            "MethodSettings": Match.array_with([Match.object_like({"MetricsEnabled": True})]),
        },
    )
    paths = {r["Properties"]["PathPart"] for r in s.template.find_resources("AWS::ApiGateway::Resource").values()}
    assert {
        "v2",
        "v1",
        "health",
        "live",
        "ready",
        "models",
        "digits",
        "minilm",
        "{proxy+}",
        "swagger",
        "digits:predict",
        "minilm:predict",
    } <= paths
    methods = s.template.find_resources("AWS::ApiGateway::Method")
    docs = s.logical_id(s.stack.api.docs_method)  # public by cdk.json's docs setting: test_docs_route.py
    assert methods and all(m["Properties"]["ApiKeyRequired"] is True for lid, m in methods.items() if lid != docs)
    assert all(m["Properties"]["Integration"]["Type"] == "AWS_PROXY" for m in methods.values())
    s.template.has_resource_properties("AWS::ApiGateway::UsagePlan", {"Throttle": {"RateLimit": 50, "BurstLimit": 100}})
    s.template.resource_count_is("AWS::ApiGateway::ApiKey", 1)
    # every integration targets a `live` alias
    for method in methods.values():
        uri = json.dumps(method["Properties"]["Integration"]["Uri"])
        assert "Live" in uri


def test_event_sources_queues_and_dead_letters(synth):
    s = synth("default")
    queues = s.template.find_resources("AWS::SQS::Queue")
    # inbox + requests, each with a DLQ, and the big batch state machine's failed executions, per model
    assert len(queues) == 10
    redriven = [q for q in queues.values() if "RedrivePolicy" in q["Properties"]]
    assert len(redriven) == 4 and all(q["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 3 for q in redriven)
    assert all(q["Properties"]["SqsManagedSseEnabled"] for q in queues.values())
    mappings = s.template.find_resources("AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 4
    assert all(m["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in mappings.values())
    worker = s.logical_id(s.stack.functions["minilm"]["worker"].alias)
    (mapping,) = [
        m["Properties"]
        for m in mappings.values()
        if worker in json.dumps(m["Properties"]["FunctionName"])
        and "BatchSize" in m["Properties"]
        and m["Properties"].get("ScalingConfig")
    ]
    assert ":live" in json.dumps(mapping["FunctionName"])  # event sources feed the `live` alias
    assert mapping["BatchSize"] == 10 and mapping["ScalingConfig"] == {"MaximumConcurrency": 5}
    notifications = s.template.find_resources("Custom::S3BucketNotifications")
    (config,) = notifications.values()
    prefixes = sorted(
        rule["Filter"]["Key"]["FilterRules"][0]["Value"]
        for rule in config["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    )
    assert prefixes == ["inbox/digits/", "inbox/minilm/"]


def test_alarms_for_every_function_api_queue_and_model_load(synth):
    s = synth("default")
    alarms = list(s.template.find_resources("AWS::CloudWatch::Alarm").values())
    topic = {"Ref": s.logical_id(s.stack.monitoring.topic)}
    assert all(a["Properties"]["AlarmActions"] == [topic] for a in alarms)

    def watched(metric, dimension, target):
        return [
            a
            for a in alarms
            if a["Properties"].get("MetricName") == metric
            and {"Name": dimension, "Value": target} in a["Properties"].get("Dimensions", [])
        ]

    for model in ("digits", "minilm"):
        for role in ("api", "batch", "worker"):
            ref = {"Ref": s.logical_id(s.stack.functions[model][role].function)}
            for metric in ("Errors", "Throttles", "Duration"):
                assert len(watched(metric, "FunctionName", ref)) == 1, (model, role, metric)
            # a queue-fed function reaches its queue's maximum concurrency by design: its queue's age is watched
            assert len(watched("ConcurrentExecutions", "FunctionName", ref)) == (role == "api"), (model, role)
        for queue_owner in (s.stack.inboxes[model], s.stack.request_queues[model]):
            dlq = {"Fn::GetAtt": [s.logical_id(queue_owner.dead_letters), "QueueName"]}
            queue = {"Fn::GetAtt": [s.logical_id(queue_owner.queue), "QueueName"]}
            assert watched("ApproximateNumberOfMessagesVisible", "QueueName", dlq)
            assert watched("ApproximateAgeOfOldestMessage", "QueueName", queue)
    api_name = {"Ref": s.logical_id(s.stack.api.api)}
    for metric in ("5XXError", "4XXError", "Latency"):
        assert watched(metric, "ApiName", {"Fn::Select": Match.any_value()}) or any(
            a["Properties"].get("MetricName") == metric for a in alarms
        ), metric
    assert any(a["Properties"].get("MetricName") == "ModelLoadFailures" for a in alarms)
    assert api_name  # the API exists
    s.template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    s.template.resource_count_is("AWS::SNS::Topic", 1)  # one topic: the models' stacks alarm to the app's
    # the overview dashboard, and one a model in its own stack
    s.template.resource_count_is("AWS::CloudWatch::Dashboard", 3)
    s.own_template.resource_count_is("AWS::CloudWatch::Dashboard", 1)


def test_each_model_has_one_health_alarm_of_all_its_alarms_on_the_overview(synth):
    """A composite alarm per model (no action: each alarm notifies already), shown on the overview."""
    s = synth("default")
    overview = json.dumps(s.template.to_json()["Resources"][s.logical_id(s.stack.monitoring.dashboard)])
    for model, stack in s.stack.model_stacks.items():
        template = s.model_template(model).to_json()["Resources"]
        alarms = [lid for lid, r in template.items() if r["Type"] == "AWS::CloudWatch::Alarm"]
        (health,) = [r["Properties"] for r in template.values() if r["Type"] == "AWS::CloudWatch::CompositeAlarm"]
        assert "AlarmActions" not in health
        rule = json.dumps(health["AlarmRule"])
        # errors, throttles, duration of three functions; API concurrency; two queues' DLQ and age; loads;
        # the big batch state machine's failed executions and its failed-executions queue
        assert all(alarm in rule for alarm in alarms) and len(alarms) == 17
        assert s.logical_id(stack.monitoring.health) in overview


def test_outputs(synth):
    outputs = synth("default").template.to_json()["Outputs"]
    assert {"ApiUrl", "ApiKeyId", "BucketName", "DashboardName", "AlarmTopicArn"} <= set(outputs)


def test_options_variant(synth):
    s = synth("options")
    functions = _our_functions(s.template)
    digits_api = functions[s.logical_id(s.stack.functions["digits"]["api"].function)]["Properties"]
    assert digits_api["Architectures"] == ["arm64"]
    assert digits_api["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert digits_api["Environment"]["Variables"]["LOAD_MODE"] == "eager"
    assert digits_api["Environment"]["Variables"]["API_AUTH"] == "iam"
    minilm_api = functions[s.logical_id(s.stack.functions["minilm"]["api"].function)]["Properties"]
    assert minilm_api["ReservedConcurrentExecutions"] == 10 and minilm_api["MemorySize"] == 3538
    assert minilm_api["Environment"]["Variables"]["API_AUTH"] == "api_key"
    s.template.has_resource_properties(
        "AWS::Lambda::Alias", {"Name": "live", "ProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": 2}}
    )
    layers = _our_layers(s.template).values()
    assert sorted(x["Properties"]["CompatibleArchitectures"][0] for x in layers) == ["arm64", "x86_64"]
    s.template.resource_count_is("AWS::CodeDeploy::DeploymentGroup", 2)
    s.template.has_resource_properties(
        "AWS::CodeDeploy::DeploymentGroup",
        {
            "AlarmConfiguration": Match.object_like({"Enabled": True}),
            "AutoRollbackConfiguration": Match.object_like({"Enabled": True}),
        },
    )
    s.template.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"})
    digits_methods = [
        m
        for m in s.template.find_resources("AWS::ApiGateway::Method").values()
        if s.logical_id(s.stack.functions["digits"]["api"].alias) in json.dumps(m["Properties"]["Integration"])
    ]
    assert digits_methods and all(m["Properties"]["AuthorizationType"] == "AWS_IAM" for m in digits_methods)
    s.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping", {"BatchSize": 8, "ScalingConfig": {"MaximumConcurrency": 4}}
    )


def test_image_variant_uses_the_same_sources_without_docker(synth):
    s = synth("image")
    functions = _our_functions(s.template)
    assert len(functions) == 6
    for props in (f["Properties"] for f in functions.values()):
        assert props["PackageType"] == "Image" and "Layers" not in props
        assert props["ImageConfig"]["Command"][0] in HANDLERS
    assert _our_layers(s.template) == {}
    assets = json.loads((s.outdir / f"{s.stack.stack_name}.assets.json").read_text())
    images = assets["dockerImages"].values()
    platforms = {image["source"].get("platform") for image in images}
    assert platforms == {"linux/arm64", "linux/amd64"}
    for image in images:
        context = s.outdir / image["source"]["directory"]
        assert (context / "layers" / "Dockerfile").exists() and (context / "handlers" / "api.py").exists()
        assert (context / "layers" / "requirements.txt").read_bytes() == (
            ROOT / "layers" / "requirements.txt"
        ).read_bytes()


def test_tracing_setting_turns_on_xray_and_the_powertools_tracer(synth):
    s = synth("options")
    functions = _our_functions(s.template)
    for model, mode, disabled in (("minilm", "Active", "false"), ("digits", "PassThrough", "true")):
        for role in ("api", "batch", "worker"):
            props = functions[s.logical_id(s.stack.functions[model][role].function)]["Properties"]
            assert props["TracingConfig"] == {"Mode": mode}
            assert props["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == disabled

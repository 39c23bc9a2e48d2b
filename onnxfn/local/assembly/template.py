"""Reading ``<stack>.template.json`` and ``<stack>.assets.json`` of a cloud assembly into specs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxfn.local.assembly.nested import flatten
from onnxfn.local.assembly.specs import (
    ApiSpec,
    AssemblyError,
    CloudAssembly,
    DeploymentSpec,
    EventSourceSpec,
    FunctionSpec,
    NotificationSpec,
    QueueSpec,
    RouteSpec,
    StateMachineSpec,
    local_name,
)


def _stack_artifact(directory: Path) -> tuple[str, Path]:
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        raise AssemblyError(f"no cloud assembly in {directory} (no manifest.json); run `make synth` first")
    manifest = json.loads(manifest_path.read_text())
    stacks = [
        (name, artifact)
        for name, artifact in manifest.get("artifacts", {}).items()
        if artifact.get("type") == "aws:cloudformation:stack"
    ]
    if len(stacks) != 1:
        raise AssemblyError(f"expected one stack in {directory}, found {[name for name, _ in stacks]}")
    name, artifact = stacks[0]
    return name, directory / artifact["properties"]["templateFile"]


def _asset_paths(directory: Path, stack: str) -> dict[str, Path]:
    """Asset hash → staged path in the assembly, from ``<stack>.assets.json``."""
    assets_file = directory / f"{stack}.assets.json"
    if not assets_file.exists():
        return {}
    assets = json.loads(assets_file.read_text())
    paths = {key: directory / value["source"]["path"] for key, value in assets.get("files", {}).items()}
    for key, value in assets.get("dockerImages", {}).items():
        paths[key] = directory / value["source"]["directory"]
    return paths


def _ref_target(value: Any) -> str | None:
    if isinstance(value, dict):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            return str(value["Fn::GetAtt"][0])
    return None


def _refs(value: Any) -> list[str]:
    """Every logical id a property value refers to, in order."""
    found: list[str] = []
    if isinstance(value, dict):
        target = _ref_target(value)
        if target is not None:
            found.append(target)
        else:
            for item in value.values():
                found.extend(_refs(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_refs(item))
    return found


class _Template:
    def __init__(self, template: Mapping[str, Any]) -> None:
        self.resources: dict[str, Any] = dict(template.get("Resources", {}))

    def of_type(self, kind: str) -> dict[str, Mapping[str, Any]]:
        return {key: value for key, value in self.resources.items() if value.get("Type") == kind}

    def props(self, logical_id: str) -> Mapping[str, Any]:
        return self.resources[logical_id].get("Properties", {})  # type: ignore[no-any-return]

    def function_of(self, value: Any) -> str | None:
        """The function a reference points at, through a ``live`` alias or version if need be."""
        for target in _refs(value):
            kind = self.resources.get(target, {}).get("Type")
            if kind == "AWS::Lambda::Function":
                return target
            if kind in ("AWS::Lambda::Alias", "AWS::Lambda::Version"):
                inner = self.function_of(self.props(target).get("FunctionName"))
                if inner:
                    return inner
        return None


def _function(
    template: _Template, directory: Path, stack: str, logical_id: str, assets: Mapping[str, Path]
) -> FunctionSpec:
    resource = template.resources[logical_id]
    props = resource.get("Properties", {})
    code = props.get("Code", {})
    handler = props.get("Handler")
    if props.get("PackageType") == "Image":
        handler = (props.get("ImageConfig", {}).get("Command") or [None])[0]
    code_dir = assets.get(str(code.get("S3Key", "")).removesuffix(".zip"))
    metadata_path = resource.get("Metadata", {}).get("aws:asset:path")
    if code_dir is None and metadata_path:  # image functions: the staged Docker build context
        code_dir = directory / metadata_path
    if not handler or code_dir is None:
        raise AssemblyError(f"function {logical_id}: cannot find its handler or staged code in the assembly")
    layer_dirs = []
    for reference in props.get("Layers", []):
        layer_id = _ref_target(reference)
        content = template.props(layer_id).get("Content", {}) if layer_id in template.resources else {}
        layer_dir = assets.get(str(content.get("S3Key", "")).removesuffix(".zip"))
        if layer_dir is None:
            raise AssemblyError(f"function {logical_id}: cannot find the staged folder of its layer {reference}")
        layer_dirs.append(layer_dir.resolve())
    image = props.get("PackageType") == "Image"
    build_args = resource.get("Metadata", {}).get("aws:asset:docker-build-args", {})
    runtime = f"python{build_args['PYTHON_VERSION']}" if image and "PYTHON_VERSION" in build_args else None
    return FunctionSpec(
        logical_id=logical_id,
        name=local_name(stack, logical_id, 64),
        handler=str(handler),
        code_dir=code_dir,
        environment=dict(props.get("Environment", {}).get("Variables", {})),
        memory_mb=int(props.get("MemorySize", 128)),
        timeout_s=int(props.get("Timeout", 3)),
        architecture=(props.get("Architectures") or ["x86_64"])[0],
        description=str(props.get("Description", "")),
        runtime=str(runtime or props.get("Runtime", "python3.12")),
        packaging="image" if image else "zip",
        layer_dirs=tuple(layer_dirs),
    )


def _api(template: _Template) -> tuple[ApiSpec | None, set[str]]:
    apis = template.of_type("AWS::ApiGateway::RestApi")
    if not apis:
        return None, set()
    if len(apis) > 1:
        raise AssemblyError(f"expected one REST API, found {sorted(apis)}")
    api_id, api = next(iter(apis.items()))
    paths: dict[str, str] = {}

    def path_of(resource_id: str) -> str:
        if resource_id not in paths:
            props = template.props(resource_id)
            parent = props.get("ParentId")
            parent_id = _ref_target(parent)
            prefix = "" if parent_id == api_id or parent_id is None else path_of(parent_id)
            paths[resource_id] = f"{prefix}/{props['PathPart']}"
        return paths[resource_id]

    routes: list[RouteSpec] = []
    functions: set[str] = set()
    for method in template.of_type("AWS::ApiGateway::Method").values():
        props = method.get("Properties", {})
        integration = props.get("Integration", {})
        if integration.get("Type") not in ("AWS_PROXY", "AWS"):
            continue
        function_id = template.function_of(integration.get("Uri"))
        if function_id is None:
            continue
        resource_id = _ref_target(props.get("ResourceId"))
        resource_path = "/" if resource_id in (None, api_id) else path_of(resource_id)
        routes.append(
            RouteSpec(
                method=str(props.get("HttpMethod", "ANY")).upper(),
                resource_path=resource_path,
                function_id=function_id,
                api_key_required=bool(props.get("ApiKeyRequired", False)),
                authorization=str(props.get("AuthorizationType", "NONE")),
            )
        )
        functions.add(function_id)
    stages = [s.get("Properties", {}) for s in template.of_type("AWS::ApiGateway::Stage").values()]
    stage = str(stages[0].get("StageName", "prod")) if stages else "prod"
    props = api.get("Properties", {})
    spec = ApiSpec(
        logical_id=api_id,
        name=str(props.get("Name", api_id)),
        stage=stage,
        binary_media_types=tuple(str(t).replace("~1", "/") for t in props.get("BinaryMediaTypes", [])),
        routes=tuple(sorted(routes, key=lambda r: (r.resource_path, r.method))),
        has_api_key=bool(template.of_type("AWS::ApiGateway::ApiKey")),
        gateway_responses=_gateway_responses(template),
    )
    return spec, functions


def _gateway_responses(template: _Template) -> dict[str, tuple[str | None, str]]:
    found: dict[str, tuple[str | None, str]] = {}
    for resource in template.of_type("AWS::ApiGateway::GatewayResponse").values():
        props = resource.get("Properties", {})
        status = props.get("StatusCode")
        body = (props.get("ResponseTemplates") or {}).get("application/json")
        if body is not None:
            found[str(props["ResponseType"])] = (str(status) if status is not None else None, str(body))
    return found


def _queues(template: _Template, stack: str) -> tuple[QueueSpec, ...]:
    queues = []
    for logical_id, resource in template.of_type("AWS::SQS::Queue").items():
        props = resource.get("Properties", {})
        redrive = props.get("RedrivePolicy") or {}
        fifo = bool(props.get("FifoQueue"))
        name = local_name(stack, logical_id, 75) + (".fifo" if fifo else "")
        attributes = {"FifoQueue": "true"} if fifo else {}
        queues.append(
            QueueSpec(
                logical_id=logical_id,
                name=name,
                visibility_timeout_s=int(props.get("VisibilityTimeout", 30)),
                dead_letter_id=_ref_target(redrive.get("deadLetterTargetArn")),
                max_receive_count=int(redrive["maxReceiveCount"]) if "maxReceiveCount" in redrive else None,
                attributes=attributes,
            )
        )
    return tuple(sorted(queues, key=lambda q: q.logical_id))


def _event_sources(template: _Template) -> tuple[EventSourceSpec, ...]:
    sources = []
    for logical_id, resource in template.of_type("AWS::Lambda::EventSourceMapping").items():
        props = resource.get("Properties", {})
        queue_id = _ref_target(props.get("EventSourceArn"))
        function_id = template.function_of(props.get("FunctionName"))
        if queue_id is None or function_id is None:
            continue
        if template.resources.get(queue_id, {}).get("Type") != "AWS::SQS::Queue":
            continue
        sources.append(
            EventSourceSpec(
                logical_id=logical_id,
                queue_id=queue_id,
                function_id=function_id,
                batch_size=int(props.get("BatchSize", 10)),
                batching_window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                report_batch_item_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                max_concurrency=(props.get("ScalingConfig") or {}).get("MaximumConcurrency"),
                enabled=bool(props.get("Enabled", True)),
            )
        )
    return tuple(sorted(sources, key=lambda s: s.logical_id))


def _notifications(template: _Template) -> tuple[NotificationSpec, ...]:
    found = []
    for resource in template.of_type("Custom::S3BucketNotifications").values():
        props = resource.get("Properties", {})
        bucket_id = _ref_target(props.get("BucketName"))
        for config in props.get("NotificationConfiguration", {}).get("QueueConfigurations", []):
            queue_id = _ref_target(config.get("QueueArn"))
            if bucket_id is None or queue_id is None:
                continue
            rules = {
                r["Name"].lower(): r["Value"] for r in config.get("Filter", {}).get("Key", {}).get("FilterRules", [])
            }
            found.append(
                NotificationSpec(
                    bucket_id=bucket_id,
                    queue_id=queue_id,
                    events=tuple(config.get("Events", [])),
                    prefix=rules.get("prefix", ""),
                    suffix=rules.get("suffix", ""),
                )
            )
    return tuple(found)


def _deployments(template: _Template, assets: Mapping[str, Path]) -> tuple[DeploymentSpec, ...]:
    found = []
    for logical_id, resource in template.of_type("Custom::CDKBucketDeployment").items():
        props = resource.get("Properties", {})
        bucket_id = _ref_target(props.get("DestinationBucketName"))
        sources = []
        for key in props.get("SourceObjectKeys", []):
            path = assets.get(str(key).removesuffix(".zip"))
            if path is None:
                raise AssemblyError(f"deployment {logical_id}: asset {key} is not in the assembly; run `make synth`")
            sources.append(path)
        if bucket_id is not None:
            found.append(
                DeploymentSpec(logical_id, bucket_id, str(props.get("DestinationBucketKeyPrefix", "")), tuple(sources))
            )
    return tuple(found)


def _state_machines(template: _Template) -> tuple[StateMachineSpec, ...]:
    """Each state machine, the functions its definition's substitutions name, and the SQS targets of
    the EventBridge rules that match its failed executions by its ARN."""
    rules = [
        (json.dumps(props.get("EventPattern", {})), props.get("Targets", []))
        for props in (r.get("Properties", {}) for r in template.of_type("AWS::Events::Rule").values())
    ]
    found = []
    for logical_id, resource in sorted(template.of_type("AWS::StepFunctions::StateMachine").items()):
        props = resource.get("Properties", {})
        substitutions = dict(props.get("DefinitionSubstitutions", {}))
        functions = {key: template.function_of(value) for key, value in substitutions.items()}
        name = props.get("StateMachineName")
        queues = []
        for pattern, targets in rules:
            if "aws.states" not in pattern or name is None or json.dumps(name)[1:-1] not in pattern:
                continue
            for target in targets:
                queue_id = _ref_target(target.get("Arn"))
                if template.resources.get(queue_id or "", {}).get("Type") == "AWS::SQS::Queue":
                    queues.append(str(queue_id))
        definition = props.get("DefinitionString")
        if definition is None and "Definition" in props:
            definition = json.dumps(props["Definition"])
        found.append(
            StateMachineSpec(
                logical_id=logical_id,
                name=name,
                definition=definition,
                substitutions=substitutions,
                functions={key: fid for key, fid in functions.items() if fid is not None},
                failure_queue_ids=tuple(queues),
            )
        )
    return tuple(found)


def load_assembly(directory: Path) -> CloudAssembly:
    """Read the one stack of the cloud assembly in ``directory``, its nested stacks read in."""
    stack, template_file = _stack_artifact(directory)
    raw = flatten(json.loads(template_file.read_text()), directory)
    template = _Template(raw)
    assets = _asset_paths(directory, stack)
    api, api_functions = _api(template)
    event_sources = _event_sources(template)
    state_machines = _state_machines(template)
    served = (
        api_functions
        | {source.function_id for source in event_sources}
        | {fid for machine in state_machines for fid in machine.functions.values()}
    )
    functions = tuple(_function(template, directory, stack, logical_id, assets) for logical_id in sorted(served))
    return CloudAssembly(
        directory=directory,
        stack_name=stack,
        buckets=tuple(sorted(template.of_type("AWS::S3::Bucket"))),
        queues=_queues(template, stack),
        functions=functions,
        api=api,
        event_sources=event_sources,
        notifications=_notifications(template),
        deployments=_deployments(template, assets),
        outputs=raw.get("Outputs", {}),
        sdk_calls={lid: r.get("Properties", {}).get("Create") for lid, r in template.of_type("Custom::AWS").items()},
        state_machines=state_machines,
    )

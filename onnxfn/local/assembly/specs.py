"""The dataclasses a cloud assembly is read into, and the local account, region and names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handlers.runtime.errors import OnnxfnError

LOCAL_ACCOUNT = "123456789012"  # moto's default account
LOCAL_REGION = "us-east-1"


class AssemblyError(OnnxfnError):
    """The cloud assembly is missing or does not describe an onnxfn app."""

    status_code = 400


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    handler: str
    code_dir: Path
    environment: Mapping[str, Any]
    memory_mb: int
    timeout_s: int
    architecture: str
    description: str = ""
    runtime: str = "python3.12"  # Lambda's runtime (image functions: the base image's, from the build args)
    packaging: str = "zip"  # zip | image
    layer_dirs: tuple[Path, ...] = ()  # zip: the staged layer folders, in the function's order

    @property
    def kind(self) -> str:
        """``api``, ``batch`` or ``worker``: the handler module, for tables and logs."""
        module = self.handler.rsplit(".", 1)[0].rsplit(".", 1)[-1]
        return {"s3_batch": "batch", "queue_worker": "worker"}.get(module, module)


@dataclass(frozen=True)
class RouteSpec:
    method: str  # GET, POST, ... or ANY
    resource_path: str  # "/v2/models/digits/{proxy+}"
    function_id: str
    api_key_required: bool
    authorization: str  # NONE | AWS_IAM | CUSTOM | COGNITO_USER_POOLS

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(part for part in self.resource_path.split("/") if part)


@dataclass(frozen=True)
class ApiSpec:
    logical_id: str
    name: str
    stage: str
    binary_media_types: tuple[str, ...]
    routes: tuple[RouteSpec, ...]
    has_api_key: bool
    # API Gateway's own answers, by response type: (status code or None, application/json template)
    gateway_responses: Mapping[str, tuple[str | None, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    name: str
    visibility_timeout_s: int
    dead_letter_id: str | None = None
    max_receive_count: int | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EventSourceSpec:
    logical_id: str
    queue_id: str
    function_id: str
    batch_size: int
    batching_window_s: float
    report_batch_item_failures: bool
    max_concurrency: int | None
    enabled: bool = True


@dataclass(frozen=True)
class NotificationSpec:
    bucket_id: str
    queue_id: str
    events: tuple[str, ...]
    prefix: str = ""
    suffix: str = ""


@dataclass(frozen=True)
class DeploymentSpec:
    """A ``BucketDeployment``: asset folders (or zips) copied under a prefix of a bucket."""

    logical_id: str
    bucket_id: str
    prefix: str
    sources: tuple[Path, ...]


@dataclass(frozen=True)
class StateMachineSpec:
    """A state machine: its definition as written (``DefinitionString`` and its substitutions), the
    functions its substitutions name, and the queues EventBridge sends its failed executions to."""

    logical_id: str
    name: Any  # StateMachineName, unresolved; None: CloudFormation would make one up
    definition: Any  # DefinitionString (a string, or an intrinsic that resolves to one)
    substitutions: Mapping[str, Any] = field(default_factory=dict)
    functions: Mapping[str, str] = field(default_factory=dict)  # substitution -> function logical id
    failure_queue_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CloudAssembly:
    directory: Path
    stack_name: str
    buckets: tuple[str, ...]
    queues: tuple[QueueSpec, ...]
    functions: tuple[FunctionSpec, ...]
    api: ApiSpec | None
    event_sources: tuple[EventSourceSpec, ...]
    notifications: tuple[NotificationSpec, ...]
    deployments: tuple[DeploymentSpec, ...]
    outputs: Mapping[str, Any]
    # Custom::AWS resources (CDK's AwsCustomResource): logical id -> their unresolved Create call
    sdk_calls: Mapping[str, Any] = field(default_factory=dict)
    state_machines: tuple[StateMachineSpec, ...] = ()

    def function(self, logical_id: str) -> FunctionSpec:
        for spec in self.functions:
            if spec.logical_id == logical_id:
                return spec
        raise KeyError(logical_id)

    def queue(self, logical_id: str) -> QueueSpec:
        for spec in self.queues:
            if spec.logical_id == logical_id:
                return spec
        raise KeyError(logical_id)


def local_name(stack: str, logical_id: str, limit: int, *, lower: bool = False) -> str:
    """A physical name shaped as CloudFormation makes them: ``<stack>-<logical id>``, bounded."""
    name = f"{stack}-{logical_id}"
    if lower:
        name = re.sub(r"[^a-z0-9.-]", "-", name.lower())
    return name[:limit].rstrip("-.")

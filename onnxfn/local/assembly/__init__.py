"""What the synthesized cloud assembly (``cdk.out``) says exists, read into plain dataclasses.

``onnxfn serve`` builds nothing from its own idea of the app: functions, their handler, code,
environment, memory and timeout; the API's resources, methods, key requirement and binary media
types; queues and their redrive; event source mappings; bucket notifications and the artifact
deployments, and the state machines all come from the template CDK wrote, so what runs locally is what ``cdk deploy``
would create. References (``Ref``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::Sub``) stay unresolved
here; :class:`Resolver` resolves them once the local resources exist.
"""

from onnxfn.local.assembly.nested import flatten, nested_templates
from onnxfn.local.assembly.resolver import Resolver
from onnxfn.local.assembly.specs import (
    LOCAL_ACCOUNT,
    LOCAL_REGION,
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
from onnxfn.local.assembly.template import load_assembly

__all__ = [
    "LOCAL_ACCOUNT",
    "LOCAL_REGION",
    "ApiSpec",
    "AssemblyError",
    "CloudAssembly",
    "DeploymentSpec",
    "EventSourceSpec",
    "FunctionSpec",
    "NotificationSpec",
    "QueueSpec",
    "Resolver",
    "RouteSpec",
    "StateMachineSpec",
    "flatten",
    "load_assembly",
    "local_name",
    "nested_templates",
]

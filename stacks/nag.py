"""cdk-nag acknowledgments: every accepted finding carries its written reason.

cdk-nag 3 reports granular findings (``AwsSolutions-IAM5[Resource::<Bucket.Arn>/models/x/*]``) and
an acknowledgment must name the finding exactly, so wildcard grants are accepted one by one.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnResource, Names, Stack, Validations
from constructs import IConstruct

BASIC_EXECUTION_ROLE = "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept ``rule`` (e.g. ``AwsSolutions-L1`` or ``AwsSolutions-IAM5[Resource::*]``) on ``scope``."""
    Validations.of(scope).acknowledge(Acknowledgment(id=f"AwsSolutions::{rule}", reason=reason))


def arn_finding(resource: IConstruct, suffix: str = "", seen_from: IConstruct | None = None) -> str:
    """How cdk-nag writes ``<resource ARN><suffix>`` in a finding, e.g. ``<StorageModels1234.Arn>/inbox/x/*``.

    ``seen_from``: the construct whose template holds the finding. In a nested stack the ARN of a
    resource of its parent arrives as a parameter CDK names ``referenceto<unique id>Arn``.
    """
    cfn = resource.node.default_child
    assert isinstance(cfn, CfnResource)
    stack = Stack.of(resource)
    if seen_from is not None and Stack.of(seen_from) is not stack:
        return f"<referenceto{Names.unique_id(cfn)}Arn>{suffix}"
    logical_id = stack.resolve(stack.get_logical_id(cfn))
    return f"<{logical_id}.Arn>{suffix}"

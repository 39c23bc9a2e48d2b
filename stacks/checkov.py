"""checkov acknowledgments: every skipped check carries its written reason, in the template.

checkov reads ``Metadata.checkov.skip`` of a CloudFormation resource. General rules (every Lambda
function, log group, queue, stage) are applied by an aspect, and only where the condition that
makes them safe holds (a queue is skipped for CKV_AWS_27 only if SQS-managed encryption is on);
one-off acknowledgments are added with :func:`skip` where the resource is created.
"""

from __future__ import annotations

from typing import Any

import jsii
from aws_cdk import CfnResource, IAspect
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import IConstruct

FUNCTION_REASONS = {
    "CKV_AWS_116": "Invoked synchronously by API Gateway or by SQS event source mappings, whose queues have "
    "their own dead-letter queues; an asynchronous-invocation DLQ would never receive anything",
    "CKV_AWS_117": "Calls only S3 and SQS over TLS with IAM; a VPC would add NAT or endpoint cost and cold start "
    "time and protect nothing the function can reach",
    "CKV_AWS_173": "The environment holds bucket names, prefixes and the manifest sha256: no secrets; "
    "Lambda encrypts it at rest with an AWS-managed key",
}
UNRESERVED_REASON = (
    "reserved_concurrency is a per-model setting, unset by default because a reservation takes capacity from "
    "the account's pool; set it to cap a model's concurrency and cost"
)
LOG_GROUP_REASON = (
    "CloudWatch Logs encrypts log data at rest; the handlers log no payload data (tested), so a customer-managed "
    "key would add cost without protecting anything sensitive"
)
QUEUE_REASON = "SQS-managed server-side encryption is on (SqsManagedSseEnabled); the check looks only for a KMS key"
STAGE_REASON = "Inference requests are POSTs with distinct bodies: a response cache would never hit"


def skip(resource: IConstruct, check_id: str, reason: str) -> None:
    """Acknowledge checkov ``check_id`` on ``resource`` (a construct or its CloudFormation resource)."""
    cfn = resource if isinstance(resource, CfnResource) else resource.node.default_child
    assert isinstance(cfn, CfnResource), f"{resource.node.path} has no CloudFormation resource"
    current: Any = cfn.get_metadata("checkov") or {}
    skips = [entry for entry in current.get("skip", []) if entry["id"] != check_id]
    skips.append({"id": check_id, "comment": reason})
    cfn.add_metadata("checkov", {"skip": skips})


@jsii.implements(IAspect)
class CheckovAcknowledgments:
    """Applies the general acknowledgments above to every resource they fit."""

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, CfnResource) and node.cfn_resource_type == "AWS::Lambda::Function":
            # L1 functions, and CDK's own handlers (bucket notifications) made as plain CfnResources
            for check_id, reason in FUNCTION_REASONS.items():
                skip(node, check_id, reason)
            if not isinstance(node, lambda_.CfnFunction) or node.reserved_concurrent_executions is None:
                skip(node, "CKV_AWS_115", UNRESERVED_REASON)
        elif isinstance(node, logs.CfnLogGroup) and node.kms_key_id is None:
            skip(node, "CKV_AWS_158", LOG_GROUP_REASON)
        elif isinstance(node, sqs.CfnQueue) and node.sqs_managed_sse_enabled is True:
            skip(node, "CKV_AWS_27", QUEUE_REASON)
        elif isinstance(node, apigw.CfnStage):
            skip(node, "CKV_AWS_120", STAGE_REASON)

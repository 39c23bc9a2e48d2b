"""BigBatch: the state machine that scores a batch file too big for one invocation.

A Distributed Map reads the file's records straight from S3 (the exact source version; JSON Lines,
or CSV with given headers so a first row of data stays data), passes each record's index along for
its line number, and batches the records for the batch function, which writes one part per batch.
A last call to the batch function joins the parts into the outbox files the small path writes. A
Map that fails (a reader error, or failed batches past the tolerated percentage) still gets its
summary written (unless the source can no longer be read), then fails the execution: its alarm
fires and EventBridge sends it to a queue.
The definition is written as the States Language itself (CDK's Map classes can express neither the
``VersionId`` nor ``BatchInput`` paths), and ``onnxfn serve`` runs the same definition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aws_cdk import ArnFormat, Duration, Names, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from contract import big_batch
from stacks.nag import acknowledge, arn_finding

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
S3_GET_OBJECT = "arn:aws:states:::s3:getObject"
TRANSIENT_LAMBDA_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
FUNCTION = "BatchFunction"  # the definition's substitution for the batch function's ARN
RUN = {f"{name}.$": f"$.{name}" for name in big_batch.RUN_FIELDS}
_COLON = ArnFormat.COLON_RESOURCE_NAME


@dataclass(frozen=True, kw_only=True)
class BigBatchProps:
    bucket: s3.IBucket
    inbox_prefix: str  # the files it may read
    function: lambda_.IFunction  # the batch function (its alias): scores batches, assembles parts
    items_per_batch: int
    max_concurrency: int
    tolerated_failure_percent: float
    csv_columns: int | None  # None: CSV files are never big (the model is not a fixed-width tabular one)
    log_retention: logs.RetentionDays
    timeout_hours: int = 24


class BigBatch(Construct):
    """Attributes: ``state_machine``; ``name``, ``state_machine_arn`` and ``executions_arn`` (built
    from its name, so the batch function that starts it and looks up its executions does not depend
    on it); ``failed_executions`` (the queue EventBridge sends failed, timed-out and aborted
    executions to); ``definition`` (the States Language, where ``${BatchFunction}`` stands for the
    batch function's ARN).
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: BigBatchProps) -> None:
        super().__init__(scope, construct_id)
        self._props = props
        name = Names.unique_resource_name(self, max_length=80)
        self.name = name
        self.state_machine_arn = self._arn("stateMachine", name)
        self.executions_arn = self._arn("execution", f"{name}:*")
        self.definition = self._definition()
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
        self._grant(role, name)
        log_group = logs.LogGroup(self, "Logs", retention=props.log_retention, removal_policy=RemovalPolicy.DESTROY)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=name,
            # json.dumps keeps ResultPath's null, which CDK's own rendering drops
            definition_body=sfn.DefinitionBody.from_string(json.dumps(self.definition)),
            definition_substitutions={FUNCTION: props.function.function_arn},
            role=role,
            timeout=Duration.hours(props.timeout_hours),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        self.failed_executions = sqs.Queue(
            self,
            "FailedExecutions",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        events.Rule(
            self,
            "Failed",
            description="big batch executions that failed, timed out or were aborted",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={"status": ["FAILED", "TIMED_OUT", "ABORTED"], "stateMachineArn": [self.state_machine_arn]},
            ),
            targets=[targets.SqsQueue(self.failed_executions)],
        )
        acknowledge(
            self.failed_executions,
            "AwsSolutions-SQS3",
            "This queue is the dead-letter queue of the big batch executions.",
        )

    def _arn(self, resource: str, name: str) -> str:
        return Stack.of(self).format_arn(service="states", resource=resource, resource_name=name, arn_format=_COLON)

    def metric_failed(self) -> cw.Metric:
        return self.state_machine.metric_failed(period=Duration.minutes(5), statistic="Sum")

    def _map(self, reader: dict[str, Any]) -> dict[str, Any]:
        props = self._props
        score = {
            "Type": "Task",
            "Resource": LAMBDA_INVOKE,
            "Parameters": {"FunctionName": f"${{{FUNCTION}}}", "Payload.$": "$"},
            # a number per batch: the Map's results stay small however many batches there are
            "ResultSelector": {"scored.$": "$.Payload.scored"},
            "OutputPath": "$.scored",
            "Retry": _retries(),
            "End": True,
        }
        state: dict[str, Any] = {
            "Type": "Map",
            "ItemReader": {
                "Resource": S3_GET_OBJECT,
                "ReaderConfig": reader,
                "Parameters": {"Bucket.$": "$.bucket", "Key.$": "$.key", "VersionId.$": "$.version"},
            },
            "ItemSelector": {f"{big_batch.INDEX}.$": "$$.Map.Item.Index", f"{big_batch.ROW}.$": "$$.Map.Item.Value"},
            "ItemBatcher": {
                "MaxItemsPerBatch": props.items_per_batch,
                "MaxInputBytesPerBatch": big_batch.BATCH_INPUT_BYTES,
                "BatchInput": RUN,
            },
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                "StartAt": "ScoreBatch",
                "States": {"ScoreBatch": score},
            },
            "MaxConcurrency": props.max_concurrency,
            "ToleratedFailurePercentage": props.tolerated_failure_percent,
            "ResultPath": None,  # the parts hold the results; the state keeps the run's input
            "Catch": [
                {"ErrorEquals": ["States.ALL"], "ResultPath": f"$.{big_batch.FAILURE}", "Next": "AssembleFailed"}
            ],
            "Next": "Assemble",
        }
        return state

    def _assemble(self, **end: Any) -> dict[str, Any]:
        return {
            "Type": "Task",
            "Resource": LAMBDA_INVOKE,
            "Parameters": {
                "FunctionName": f"${{{FUNCTION}}}",
                "Payload": {f"{big_batch.ASSEMBLE}.$": "$"},
            },
            "ResultSelector": {"summary.$": "$.Payload"},
            "Retry": _retries(),
            **end,
        }

    def _definition(self) -> dict[str, Any]:
        props = self._props
        maps = {"ScoreJsonl": ("jsonl", self._map({"InputType": "JSONL"}))}
        if props.csv_columns is not None:
            given = {
                "InputType": "CSV",
                "CSVHeaderLocation": "GIVEN",
                # one column more than the model takes: a wider row keeps a cell to be refused by
                # (Step Functions drops the cells past the last header and pads a short row)
                "CSVHeaders": big_batch.csv_headers(props.csv_columns + 1),
            }
            maps["ScoreCsv"] = ("csv", self._map(given))
        return {
            "Comment": "onnxfn: a batch file too big for one invocation, scored on a Distributed Map",
            "StartAt": "Format",
            "States": {
                "Format": {
                    "Type": "Choice",
                    "Choices": [
                        {"Variable": "$.format", "StringEquals": fmt, "Next": state} for state, (fmt, _) in maps.items()
                    ],
                    "Default": "UnsupportedFormat",
                },
                **{state: definition for state, (_, definition) in maps.items()},
                "Assemble": self._assemble(End=True),
                "AssembleFailed": self._assemble(ResultPath="$.summary", Next="Failed"),
                "UnsupportedFormat": {
                    "Type": "Fail",
                    "Error": "onnxfn.UnsupportedFormat",
                    "Cause": f"this model's big batch files are {' or '.join(fmt for fmt, _ in maps.values())}",
                },
                "Failed": {
                    "Type": "Fail",
                    "Error": "onnxfn.BigBatchFailed",
                    "Cause": "the file's records were not scored; its .errors.jsonl and .summary.json say why",
                },
            },
        }

    def _grant(self, role: iam.Role, name: str) -> None:
        """Read the inbox, invoke the batch function, run its own child executions; nothing else."""
        props = self._props
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[props.bucket.arn_for_objects(f"{props.inbox_prefix}*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[props.function.function_arn])
        )
        role.add_to_policy(iam.PolicyStatement(actions=["states:StartExecution"], resources=[self.state_machine_arn]))
        executions = [self.executions_arn, self._arn("execution", f"{name}/*")]
        role.add_to_policy(
            iam.PolicyStatement(actions=["states:DescribeExecution", "states:StopExecution"], resources=executions)
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{arn_finding(props.bucket, f'/{props.inbox_prefix}*', seen_from=self)}]",
            f"The Distributed Map reads the file it scores: objects under {props.inbox_prefix} only.",
        )
        for pattern in (f"{name}/*", f"{name}:*"):
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:{pattern}]",
                "The Distributed Map describes and stops its own child executions, whose names it makes.",
            )
        acknowledge(role, "AwsSolutions-IAM5[Resource::*]", "Log delivery and X-Ray take no resource.")


def _retries() -> list[dict[str, Any]]:
    """Never a malformed batch; Lambda's transient errors many times; a batch's own failure twice more
    (its part is rewritten whole)."""
    return [
        {"ErrorEquals": ["InvalidInput"], "MaxAttempts": 0},  # a malformed batch fails the same way again
        {"ErrorEquals": TRANSIENT_LAMBDA_ERRORS, "IntervalSeconds": 2, "MaxAttempts": 6, "BackoffRate": 2.0},
        {"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 5, "MaxAttempts": 2, "BackoffRate": 2.0},
    ]

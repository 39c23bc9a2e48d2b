"""ModelFunction: one Lambda function for one model and one entry point, with its alias ``live``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import ModelConfig
from stacks.nag import acknowledge

ARCHITECTURES = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}
PLATFORMS = {"x86_64": ecr_assets.Platform.LINUX_AMD64, "arm64": ecr_assets.Platform.LINUX_ARM64}
RUNTIMES = {"python3.12": lambda_.Runtime.PYTHON_3_12, "python3.13": lambda_.Runtime.PYTHON_3_13}
IMAGE_EXCLUDES = ["**/__pycache__", "**/*.pyc"]


@dataclass(frozen=True, kw_only=True)
class ModelFunctionProps:
    model: ModelConfig
    handler: str  # e.g. "handlers.api.lambda_handler"
    description: str
    environment: dict[str, str]
    code_dir: str | None = None  # zip: a folder holding handlers/
    layer: lambda_.ILayerVersion | None = None
    image_context: str | None = None  # image: a folder holding layers/Dockerfile and handlers/
    timeout_s: int | None = None
    extra_layers: tuple[lambda_.ILayerVersion, ...] = field(default_factory=tuple)
    # The API function's alone: the batch and worker functions scale by their queues' maximum
    # concurrency, so the model's settings are not multiplied by three.
    reserved_concurrency: int | None = None
    provisioned_concurrency: int = 0
    snapstart: bool = False


class ModelFunction(Construct):
    """Zip (handlers asset + dependency layer) or container image from the same sources.

    Attributes: ``function``, ``alias`` (``live``), ``log_group``, ``deployment_group`` (canary, or None).
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: ModelFunctionProps) -> None:
        super().__init__(scope, construct_id)
        settings = props.model.settings
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention(settings.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        common: dict[str, Any] = {
            "description": props.description,
            "memory_size": settings.memory_mb,
            "timeout": Duration.seconds(props.timeout_s or settings.timeout_s),
            "architecture": ARCHITECTURES[settings.architecture],
            "environment": props.environment,
            # X-Ray costs its SDK's import at every cold start; on only when the model asks for it.
            "tracing": lambda_.Tracing.ACTIVE if settings.tracing else lambda_.Tracing.PASS_THROUGH,
            "log_group": self.log_group,
            "reserved_concurrent_executions": props.reserved_concurrency,
        }
        if settings.packaging == "image":
            assert props.image_context is not None
            self.function: lambda_.Function = lambda_.DockerImageFunction(
                self,
                "Function",
                code=lambda_.DockerImageCode.from_image_asset(
                    props.image_context,
                    file="layers/Dockerfile",
                    platform=PLATFORMS[settings.architecture],
                    build_args={"PYTHON_VERSION": settings.runtime.removeprefix("python")},
                    cmd=[props.handler],
                    exclude=IMAGE_EXCLUDES,
                ),
                **common,
            )
        else:
            assert props.code_dir is not None and props.layer is not None
            self.function = lambda_.Function(
                self,
                "Function",
                runtime=RUNTIMES[settings.runtime],
                handler=props.handler,
                code=lambda_.Code.from_asset(props.code_dir),
                layers=[props.layer, *props.extra_layers],
                snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if props.snapstart else None,
                **common,
            )
        self.alias = lambda_.Alias(
            self,
            "Live",
            alias_name="live",
            version=self.function.current_version,
            provisioned_concurrent_executions=props.provisioned_concurrency or None,
        )
        self.deployment_group: codedeploy.LambdaDeploymentGroup | None = None

    def add_canary(self, alarms: list[object]) -> codedeploy.LambdaDeploymentGroup:
        """Shift traffic to a new version 10% first; roll back when any of ``alarms`` fires."""
        self.deployment_group = codedeploy.LambdaDeploymentGroup(
            self,
            "Canary",
            alias=self.alias,
            deployment_config=codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES,
            alarms=alarms,  # type: ignore[arg-type]
        )
        acknowledge(
            self.deployment_group,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSCodeDeployRoleForLambdaLimited]",
            "CodeDeploy's own service role for Lambda traffic shifting: AWS's limited managed policy for it.",
        )
        return self.deployment_group


_RETENTION_NAMES = [
    "ONE_DAY",
    "THREE_DAYS",
    "FIVE_DAYS",
    "ONE_WEEK",
    "TWO_WEEKS",
    "ONE_MONTH",
    "TWO_MONTHS",
    "THREE_MONTHS",
    "FOUR_MONTHS",
    "FIVE_MONTHS",
    "SIX_MONTHS",
    "ONE_YEAR",
    "THIRTEEN_MONTHS",
    "EIGHTEEN_MONTHS",
    "TWO_YEARS",
    "THREE_YEARS",
    "FIVE_YEARS",
    "SIX_YEARS",
    "SEVEN_YEARS",
    "EIGHT_YEARS",
    "NINE_YEARS",
    "TEN_YEARS",
]


def retention(days: int) -> logs.RetentionDays:
    """CloudWatch's retention enum for a number of days (config allows only the values CloudWatch has)."""
    from stacks.config import LOG_RETENTION_DAYS

    return logs.RetentionDays[_RETENTION_NAMES[LOG_RETENTION_DAYS.index(days)]]

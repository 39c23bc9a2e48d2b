"""OnnxfnStack: storage, per-model functions (API, S3 batch, queue worker), the API, queues, monitoring."""

from __future__ import annotations

import sys
from typing import Any

from aws_cdk import (
    Aspects,
    AssetHashType,
    Aws,
    CfnOutput,
    CfnResource,
    CfnRule,
    CfnRuleAssertion,
    Fn,
    Stack,
    Token,
)
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from contract.limits import API_RESOURCES, STACK_RESOURCES
from stacks.assets import (
    Layer,
    build_layer,
    check_budget,
    requirements_file,
    stage_handlers,
    stage_image_context,
    tree_bytes,
)
from stacks.checkov import CheckovAcknowledgments, skip
from stacks.config import SNAPSTART_PARTITION, SNAPSTART_UNAVAILABLE_REGIONS, AppConfig, ConfigError, ModelConfig
from stacks.constructs.event_sources import BatchInbox, RequestQueue
from stacks.constructs.inference_api import ApiRoute, InferenceApi, InferenceApiProps
from stacks.constructs.model_deployment import ModelDeploymentProps
from stacks.constructs.model_function import RUNTIMES, ModelFunction
from stacks.constructs.model_stack import ModelStack, ModelStackProps
from stacks.constructs.model_storage import ModelStorage, ModelStorageProps
from stacks.constructs.monitoring import Monitoring, MonitoringProps
from stacks.nag import BASIC_EXECUTION_ROLE, acknowledge, arn_finding

# CDK's own singleton functions: the artifact upload, the bucket notifications, the manifest lookup.
CDK_HELPERS = ("Custom::CDKBucketDeployment", "BucketNotificationsHandler", "AWS679f53fac002430cb0da5b7982bd2287")


def asset_bucket_finding(qualifier: str) -> str:
    """cdk-nag's finding for the upload helper reading the bootstrap asset bucket of ``qualifier``."""
    bucket = f"cdk-{qualifier}-assets-<AWS::AccountId>-<AWS::Region>"
    return f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{bucket}/*]"


class OnnxfnStack(Stack):
    """Everything ``cdk deploy`` creates for the models in ``config``.

    Attributes: ``storage``, ``api``, ``monitoring``, ``functions`` (model -> role -> ModelFunction),
    ``inboxes`` and ``request_queues`` (model -> construct), ``budget`` (printed lines).
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        root = config.project_root
        self.storage = ModelStorage(self, "Storage", props=ModelStorageProps(models=config.models))
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            props=MonitoringProps(
                alarm_email=config.alarm_email,
                metrics_namespace=config.metrics_namespace,
                service_name=config.service_name,
            ),
        )
        # Function code per runtime: the same handlers/, compiled by that runtime's interpreter.
        self._code_dirs = {
            runtime: stage_handlers(root, runtime.removeprefix("python"))
            for runtime in sorted({m.settings.runtime for m in config.models if m.settings.packaging == "zip"})
        }
        self._image_context = (
            stage_image_context(
                root, tuple(r for m in config.models if m.settings.packaging == "image" for r in m.requirements)
            )
            if any(m.settings.packaging == "image" for m in config.models)
            else None
        )
        self._layers: dict[tuple[str, ...], tuple[Layer, lambda_.LayerVersion]] = {}
        self.functions: dict[str, dict[str, ModelFunction]] = {}
        self.inboxes: dict[str, BatchInbox] = {}
        self.request_queues: dict[str, RequestQueue] = {}
        self.model_stacks: dict[str, ModelStack] = {}
        self.budget: list[str] = []
        self.api = InferenceApi(
            self,
            "Inference",
            props=InferenceApiProps(
                models=tuple((m.name, m.settings.auth) for m in config.models),
                throttle_rate=config.throttle_rate,
                throttle_burst=config.throttle_burst,
                docs=config.docs,
            ),
        )
        routes = [self._add_model(model) for model in config.models]
        self.api.add_server_routes(routes[0])
        self._check_snapstart_region()
        self.monitoring.watch_api("Api", self.api.api, config.models[0].settings.alarms)
        self.monitoring.finish(
            summaries=tuple(stack.monitoring.health for stack in self.model_stacks.values() if stack.monitoring.health)
        )
        self._acknowledge_cdk_internals()
        self._acknowledge_checkov()

        self._outputs()
        self.budget.append(self._resource_budget())
        self.budget.append(self._api_budget())
        for line in self.budget:
            print(f"onnxfn budget {line}", file=sys.stderr)
        for folder, reason in config.undeployed:
            print(f"onnxfn not deployed: {folder}: {reason}", file=sys.stderr)

    def _outputs(self) -> None:
        CfnOutput(self, "ApiUrl", value=self.api.api.url, description="Base URL of the inference API")
        if self.api.api_key is not None:
            CfnOutput(
                self,
                "ApiKeyId",
                value=self.api.api_key.key_id,
                description="aws apigateway get-api-key --include-value --api-key <id>",
            )
        for index, policy in enumerate(self.api.invoke_policies):
            CfnOutput(
                self,
                f"InvokePolicyArn{index + 1 if index else ''}",
                value=policy.managed_policy_arn,
                description="Attach to the roles that call the IAM (SigV4) routes: execute-api:Invoke on them",
            )
        CfnOutput(self, "BucketName", value=self.storage.bucket.bucket_name, description="Model and data bucket")
        CfnOutput(
            self, "DashboardName", value=self.monitoring.dashboard.dashboard_name, description="CloudWatch dashboard"
        )
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn, description="SNS topic for alarms")

    # --- per model ---------------------------------------------------------------------------------

    def _layer(self, model: ModelConfig) -> tuple[Layer, lambda_.LayerVersion]:
        """The function layer (``layers/requirements.txt``) of the model's runtime and architecture."""
        settings = model.settings
        key = (settings.runtime, settings.architecture)
        if key not in self._layers:
            version = settings.runtime.removeprefix("python")
            self._layers[key] = self._layer_version(
                f"Dependencies{self._arch_id(model)}Py{version.replace('.', '')}",
                build_layer(self.config.project_root, version, settings.architecture),
                model,
                f"onnxfn dependencies for {settings.runtime} {settings.architecture}",
            )
        return self._layers[key]

    def _extra_layer(self, model: ModelConfig) -> tuple[Layer, lambda_.LayerVersion] | None:
        """The layer of what the model's pipeline needs beyond the function layer (Pillow for images),
        shared by every model of the same runtime, architecture and requirements."""
        if not model.requirements:
            return None
        settings = model.settings
        key = (settings.runtime, settings.architecture, *sorted(model.requirements))
        if key not in self._layers:
            version = settings.runtime.removeprefix("python")
            wanted = requirements_file(self.config.project_root, model.requirements)
            self._layers[key] = self._layer_version(
                f"Pipeline{self._arch_id(model)}Py{version.replace('.', '')}{wanted.stem}",
                build_layer(self.config.project_root, version, settings.architecture, wanted),
                model,
                f"onnxfn pipeline packages ({', '.join(sorted(model.requirements))[:200]})",
            )
        return self._layers[key]

    @staticmethod
    def _arch_id(model: ModelConfig) -> str:
        return "Arm64" if model.settings.architecture == "arm64" else "X8664"

    def _layer_version(
        self, construct_id: str, built: Layer, model: ModelConfig, description: str
    ) -> tuple[Layer, lambda_.LayerVersion]:
        settings = model.settings
        layer = lambda_.LayerVersion(
            self,
            construct_id,
            code=lambda_.Code.from_asset(str(built.path), asset_hash=built.hash, asset_hash_type=AssetHashType.CUSTOM),
            compatible_runtimes=[RUNTIMES[settings.runtime]],
            compatible_architectures=[
                lambda_.Architecture.ARM_64 if settings.architecture == "arm64" else lambda_.Architecture.X86_64
            ],
            description=description,
        )
        return built, layer

    def _add_model(self, model: ModelConfig) -> ApiRoute:
        """The model's ``ModelDeployment``, with the layer of its runtime (zip: the budget checked)."""
        settings = model.settings
        layer: lambda_.LayerVersion | None = None
        extra: tuple[lambda_.ILayerVersion, ...] = ()
        code_dir = self._code_dirs.get(settings.runtime)
        if settings.packaging == "zip":
            built, layer = self._layer(model)
            layers = [built]
            pipeline_layer = self._extra_layer(model)
            if pipeline_layer is not None:
                layers.append(pipeline_layer[0])
                extra = (pipeline_layer[1],)
            assert code_dir is not None
            self.budget.append(
                check_budget(
                    f"{model.name} ({settings.architecture}, {settings.runtime})", tree_bytes(code_dir), layers
                )
            )
        stack = ModelStack(
            self,
            model.construct_id,
            props=ModelStackProps(
                deployment=ModelDeploymentProps(
                    model=model,
                    storage=self.storage,
                    service_name=f"{self.config.service_name}-{model.name}",
                    metrics_namespace=self.config.metrics_namespace,
                    account_concurrency=self.config.account_concurrency,
                    code_dir=str(code_dir) if code_dir else None,
                    layer=layer,
                    extra_layers=extra,
                    image_context=str(self._image_context) if self._image_context else None,
                    # the first model's function serves /swagger (InferenceApi.add_server_routes)
                    serves_docs=model is self.config.models[0] and self.config.docs != "off",
                ),
                api=self.api,
                topic=self.monitoring.topic,
            ),
        )
        deployment = stack.deployment
        self.model_stacks[model.name] = stack
        self.functions[model.name] = {"api": deployment.api, "batch": deployment.batch, "worker": deployment.worker}
        self.inboxes[model.name] = deployment.inbox
        self.request_queues[model.name] = deployment.requests
        return deployment.route

    def resource_counts(self) -> dict[str, int]:
        """The CloudFormation resources each template holds: this stack's, then each model's stack."""
        counts = {self.stack_name: 0, **{name: 0 for name in self.model_stacks}}
        owner = {stack: name for name, stack in self.model_stacks.items()}
        for construct in self.node.find_all():
            if isinstance(construct, CfnResource):
                counts[owner.get(Stack.of(construct), self.stack_name)] += 1  # type: ignore[call-overload]
        return counts

    def _resource_budget(self) -> str:
        """CloudFormation takes at most 500 resources a template: fail with the figures before the
        deploy does, and warn past 80%."""
        counts, models = self.resource_counts(), len(self.config.models)
        own = counts.pop(self.stack_name)
        largest = max(counts, key=counts.__getitem__)
        line = (
            f"resources: {own} in the app's stack, at most {counts[largest]} in a model's ({largest}), "
            f"of CloudFormation's {STACK_RESOURCES} a template ({models} models)"
        )
        worst = max(own, counts[largest])
        if worst > STACK_RESOURCES:
            raise ConfigError(f"{line}: too many; deploy some models from an app of their own")
        if worst > 0.8 * STACK_RESOURCES:
            line += " — past 80%"
        return line

    def _api_budget(self) -> str:
        """API Gateway allows 300 resources (paths) a REST API unless the quota is raised: count them."""
        paths = sum(1 for c in self.node.find_all() if isinstance(c, apigw.CfnResource))
        line = f"API resources: {paths} of API Gateway's default quota of {API_RESOURCES} a REST API"
        if paths > API_RESOURCES:
            line += (
                " — over it: ask for a higher 'Resources per API' quota (Service Quotas, API Gateway) before "
                "deploying, or deploy some models from an app of their own"
            )
        return line

    def _check_snapstart_region(self) -> None:
        """SnapStart is not offered everywhere: a known Region is checked at synth, an environment-agnostic
        stack carries a CloudFormation rule that stops the deploy before any resource is created."""
        snapping = [m.name for m in self.config.models if m.settings.snapstart]
        if not snapping:
            return
        unavailable = ", ".join(SNAPSTART_UNAVAILABLE_REGIONS)
        if not Token.is_unresolved(self.region) and self.region in SNAPSTART_UNAVAILABLE_REGIONS:
            raise ConfigError(
                f"onnxfn.models.{snapping[0]}.snapstart: true is not allowed in {self.region}; Lambda SnapStart "
                f"is offered in every commercial Region except {unavailable}"
            )
        CfnRule(
            self,
            "SnapStartRegion",
            assertions=[
                CfnRuleAssertion(
                    assert_=Fn.condition_and(
                        Fn.condition_equals(Aws.PARTITION, SNAPSTART_PARTITION),
                        Fn.condition_not(Fn.condition_contains(list(SNAPSTART_UNAVAILABLE_REGIONS), Aws.REGION)),
                    ),
                    assert_description=(
                        f"Lambda SnapStart ({', '.join(snapping)}) is offered in every commercial Region "
                        f"except {unavailable}; set snapstart: false to deploy here"
                    ),
                )
            ],
        )

    # --- CDK's own helper functions -----------------------------------------------------------------

    def _acknowledge_checkov(self) -> None:
        """checkov findings accepted with a reason: general ones by aspect, these two by name."""
        Aspects.of(self).add(CheckovAcknowledgments())
        logs_bucket = self.storage.access_logs
        skip(logs_bucket, "CKV_AWS_18", "This is the access-log bucket; logging its own access would recurse")
        skip(logs_bucket, "CKV_AWS_21", "Access logs are written once and expire by lifecycle; versions add nothing")
        if self.api.docs_method is not None and self.config.docs == "public":
            skip(
                self.api.docs_method,
                "CKV_AWS_59",
                "docs: public serves only the Swagger UI and OpenAPI document (the API's shape: every model's "
                "routes, tensor names and shapes; no data); every model route still needs its key or IAM",
            )

    def _acknowledge_cdk_internals(self) -> None:
        """CDK-managed singleton functions (artifact upload, bucket notifications, API Gateway logging role)."""
        bucket = self.storage.bucket
        helper_findings = {
            f"AwsSolutions-IAM4[{BASIC_EXECUTION_ROLE}]": "CDK's deploy-time helper writes only its own logs.",
            "AwsSolutions-L1": "CDK pins the runtime of its own deploy-time helper functions.",
            "AwsSolutions-IAM5[Resource::*]": "CDK's notification helper configures the bucket it is given.",
            f"AwsSolutions-IAM5[Resource::{arn_finding(bucket, '/*')}]": "CDK's upload helper fills the model bucket.",
        }
        qualifier = self.synthesizer.bootstrap_qualifier
        if qualifier:  # the bootstrap of the deploy account: cdk.json's @aws-cdk/core:bootstrapQualifier
            helper_findings[asset_bucket_finding(qualifier)] = (
                "CDK's upload helper reads the staged artifacts from the bootstrap asset bucket."
            )
        for action in ("s3:GetBucket*", "s3:GetObject*", "s3:List*", "s3:Abort*", "s3:DeleteObject*"):
            helper_findings[f"AwsSolutions-IAM5[Action::{action}]"] = "CDK's upload helper syncs artifact files."
        for child in self.node.children:
            name = child.node.id
            if name.startswith(CDK_HELPERS):
                for rule, reason in helper_findings.items():
                    acknowledge(child, rule, reason)
        acknowledge(
            self.api.api,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account role for CloudWatch logging is AWS's managed push-to-logs policy.",
        )

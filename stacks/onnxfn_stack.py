"""OnnxfnStack: storage, per-model functions (API, S3 batch, queue worker), the API, queues, monitoring."""

from __future__ import annotations

import sys
from typing import Any

from aws_cdk import Aspects, AssetHashType, CfnOutput, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from contract import environment as env
from contract import layout
from stacks.assets import Layer, build_layer, check_budget, stage_handlers, stage_image_context, tree_bytes
from stacks.checkov import CheckovAcknowledgments, skip
from stacks.config import AppConfig, ModelConfig
from stacks.constructs.event_sources import BatchInbox, BatchInboxProps, RequestQueue, RequestQueueProps
from stacks.constructs.inference_api import ApiRoute, InferenceApi, InferenceApiProps
from stacks.constructs.model_function import RUNTIMES, ModelFunction, ModelFunctionProps
from stacks.constructs.model_storage import ModelStorage, ModelStorageProps
from stacks.constructs.monitoring import Monitoring, MonitoringProps
from stacks.nag import BASIC_EXECUTION_ROLE, acknowledge, arn_finding

ASSET_BUCKET_FINDING = (
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*]"
)
READ = ("s3:GetObject", "s3:GetObjectVersion")
WRITE = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")
BATCH_TIMEOUT_S = 300  # a batch file may hold many thousand rows


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
            stage_image_context(root) if any(m.settings.packaging == "image" for m in config.models) else None
        )
        self._layers: dict[tuple[str, str], tuple[Layer, lambda_.LayerVersion]] = {}
        self.functions: dict[str, dict[str, ModelFunction]] = {}
        self.inboxes: dict[str, BatchInbox] = {}
        self.request_queues: dict[str, RequestQueue] = {}
        self.budget: list[str] = []
        routes = [self._add_model(model) for model in config.models]

        self.api = InferenceApi(
            self,
            "Inference",
            props=InferenceApiProps(
                routes=tuple(routes),
                throttle_rate=config.throttle_rate,
                throttle_burst=config.throttle_burst,
                docs=config.docs,
            ),
        )
        self.monitoring.watch_api("Api", self.api.api, config.models[0].settings.alarms)
        self.monitoring.finish()
        self._acknowledge_cdk_internals()
        self._acknowledge_checkov()

        CfnOutput(self, "ApiUrl", value=self.api.api.url, description="Base URL of the inference API")
        if self.api.api_key is not None:
            CfnOutput(
                self,
                "ApiKeyId",
                value=self.api.api_key.key_id,
                description="aws apigateway get-api-key --include-value --api-key <id>",
            )
        CfnOutput(self, "BucketName", value=self.storage.bucket.bucket_name, description="Model and data bucket")
        CfnOutput(
            self, "DashboardName", value=self.monitoring.dashboard.dashboard_name, description="CloudWatch dashboard"
        )
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn, description="SNS topic for alarms")
        for line in self.budget:
            print(f"onnxfn budget {line}", file=sys.stderr)

    # --- per model ---------------------------------------------------------------------------------

    def _layer(self, model: ModelConfig) -> tuple[Layer, lambda_.LayerVersion]:
        settings = model.settings
        key = (settings.runtime, settings.architecture)
        if key not in self._layers:
            version = settings.runtime.removeprefix("python")
            built = build_layer(self.config.project_root, version, settings.architecture)
            arch_id = "Arm64" if settings.architecture == "arm64" else "X8664"
            layer = lambda_.LayerVersion(
                self,
                f"Dependencies{arch_id}Py{version.replace('.', '')}",
                code=lambda_.Code.from_asset(
                    str(built.path), asset_hash=built.hash, asset_hash_type=AssetHashType.CUSTOM
                ),
                compatible_runtimes=[RUNTIMES[settings.runtime]],
                compatible_architectures=[
                    lambda_.Architecture.ARM_64 if settings.architecture == "arm64" else lambda_.Architecture.X86_64
                ],
                description=f"onnxfn dependencies for {settings.runtime} {settings.architecture}",
            )
            self._layers[key] = (built, layer)
        return self._layers[key]

    def _service(self, model: ModelConfig) -> str:
        """Powertools service name, one per model: its metrics (and alarms) never mix with another's."""
        return f"{self.config.service_name}-{model.name}"

    def _environment(self, model: ModelConfig) -> dict[str, str]:
        bucket = self.storage.bucket.bucket_name
        return {
            env.MODEL_NAME: model.name,
            env.MODEL_BUCKET: bucket,
            env.MODEL_PREFIX: model.prefix,
            env.MANIFEST_SHA256: model.manifest_sha256,
            env.LOAD_MODE: model.load_mode,
            env.DATA_BUCKET: bucket,
            env.INBOX_PREFIX: layout.inbox_prefix(model.name),
            env.OUTBOX_PREFIX: layout.outbox_prefix(model.name),
            env.RESULTS_PREFIX: layout.results_prefix(model.name),
            env.REQUESTS_PREFIX: layout.requests_prefix(model.name),
            env.SERVICE_NAME: self._service(model),
            env.METRICS_NAMESPACE: self.config.metrics_namespace,
            env.REPLY_QUEUES: ",".join(model.settings.reply_queue_arns),
            env.LOG_LEVEL: "INFO",
            env.TRACE_DISABLED: "false" if model.settings.tracing else "true",
        }

    def _add_model(self, model: ModelConfig) -> ApiRoute:
        """Everything one model deploys: its three functions, their grants, event sources and alarms."""
        scope = Construct(self, model.construct_id)
        api, batch, worker = self._functions(model, scope)
        self._grant(model, api, batch, worker)
        self._event_sources(model, scope, batch, worker)
        self._watch(model, api, batch, worker)
        return ApiRoute(model=model.name, target=api.alias, auth=model.settings.auth)

    def _functions(self, model: ModelConfig, scope: Construct) -> tuple[ModelFunction, ModelFunction, ModelFunction]:
        """The API, batch and worker functions, zip (with the budget checked) or image."""
        settings = model.settings
        environment = self._environment(model)
        layer: lambda_.LayerVersion | None = None
        code_dir = self._code_dirs.get(settings.runtime)
        if settings.packaging == "zip":
            built, layer = self._layer(model)
            assert code_dir is not None
            self.budget.append(
                check_budget(
                    f"{model.name} ({settings.architecture}, {settings.runtime})", tree_bytes(code_dir), [built]
                )
            )

        def function(
            role: str,
            handler: str,
            description: str,
            timeout_s: int | None = None,
            extra_environment: dict[str, str] | None = None,
        ) -> ModelFunction:
            return ModelFunction(
                scope,
                role,
                props=ModelFunctionProps(
                    model=model,
                    handler=handler,
                    description=f"onnxfn {model.name} v{model.version}: {description}",
                    environment={**environment, **(extra_environment or {})},
                    code_dir=str(code_dir) if code_dir else None,
                    layer=layer,
                    image_context=str(self._image_context) if self._image_context else None,
                    timeout_s=timeout_s,
                ),
            )

        api = function(
            "Api",
            "handlers.api.lambda_handler",
            "Open Inference Protocol and V1 predict",
            # the OpenAPI document declares how callers authenticate (Swagger UI's Authorize)
            extra_environment={env.API_AUTH: settings.auth},
        )
        batch = function(
            "Batch", "handlers.s3_batch.lambda_handler", "S3 batch files", max(settings.timeout_s, BATCH_TIMEOUT_S)
        )
        worker = function("Worker", "handlers.queue_worker.lambda_handler", "queued inference requests")
        self.functions[model.name] = {"api": api, "batch": batch, "worker": worker}

        return api, batch, worker

    def _grant(self, model: ModelConfig, api: ModelFunction, batch: ModelFunction, worker: ModelFunction) -> None:
        """Least privilege: each function reads and writes only its model's own prefixes."""
        settings = model.settings
        self._grant_objects(api, {model.prefix: READ})
        self._grant_objects(
            batch, {model.prefix: READ, layout.inbox_prefix(model.name): READ, layout.outbox_prefix(model.name): WRITE}
        )
        self._grant_objects(
            worker,
            {
                model.prefix: READ,
                layout.requests_prefix(model.name): READ,
                layout.results_prefix(model.name): ("s3:PutObject",),
            },
        )
        # Without ListBucket, S3 answers a HEAD or GET of a missing key with 403 instead of 404.
        self._allow_listing(batch, [layout.outbox_prefix(model.name)])
        self._allow_listing(worker, [layout.requests_prefix(model.name)])
        if settings.reply_queue_arns:
            worker.function.add_to_role_policy(
                iam.PolicyStatement(actions=["sqs:SendMessage"], resources=list(settings.reply_queue_arns))
            )
        for fn in (api, batch, worker):
            fn.function.node.add_dependency(self.storage.deployments[model.name])

    def _event_sources(self, model: ModelConfig, scope: Construct, batch: ModelFunction, worker: ModelFunction) -> None:
        """The inbox's notifications and the request queue, each with its dead-letter queue."""
        settings = model.settings
        self.inboxes[model.name] = BatchInbox(
            scope,
            "Inbox",
            props=BatchInboxProps(
                bucket=self.storage.bucket,
                prefix=layout.inbox_prefix(model.name),
                function=batch.alias,
                timeout_s=max(settings.timeout_s, BATCH_TIMEOUT_S),
            ),
        )
        self.request_queues[model.name] = RequestQueue(
            scope,
            "Requests",
            props=RequestQueueProps(
                function=worker.alias,
                timeout_s=settings.timeout_s,
                batch_size=settings.batch_size,
                max_concurrency=settings.max_concurrency,
            ),
        )

    def _watch(self, model: ModelConfig, api: ModelFunction, batch: ModelFunction, worker: ModelFunction) -> None:
        """Alarms and dashboard widgets for the three functions, the two queues and the model loads."""
        settings = model.settings
        label = model.construct_id
        thresholds = settings.alarms
        api_alarms = self.monitoring.watch_function(
            f"{label}Api",
            api.function,
            timeout_s=settings.timeout_s,
            reserved_concurrency=settings.reserved_concurrency,
            thresholds=thresholds,
        )
        self.monitoring.watch_function(
            f"{label}Batch",
            batch.function,
            timeout_s=max(settings.timeout_s, BATCH_TIMEOUT_S),
            reserved_concurrency=settings.reserved_concurrency,
            thresholds=thresholds,
        )
        self.monitoring.watch_function(
            f"{label}Worker",
            worker.function,
            timeout_s=settings.timeout_s,
            reserved_concurrency=settings.reserved_concurrency,
            thresholds=thresholds,
        )
        inbox, requests = self.inboxes[model.name], self.request_queues[model.name]
        self.monitoring.watch_queue(f"{label}Inbox", inbox.queue, inbox.dead_letters, thresholds)
        self.monitoring.watch_queue(f"{label}Requests", requests.queue, requests.dead_letters, thresholds)
        load_alarm = self.monitoring.watch_model_loads(label, thresholds, service=self._service(model))
        if settings.canary:
            api.add_canary([api_alarms[0], load_alarm])

    def _allow_listing(self, fn: ModelFunction, prefixes: list[str]) -> None:
        """``s3:ListBucket`` on the bucket, for keys under ``prefixes`` only."""
        fn.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.storage.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}},
            )
        )

    def _grant_objects(self, fn: ModelFunction, grants: dict[str, tuple[str, ...]]) -> None:
        """Explicit object actions on this model's own prefixes only, each wildcard acknowledged by name."""
        bucket = self.storage.bucket
        for prefix, object_actions in grants.items():
            fn.function.add_to_role_policy(
                iam.PolicyStatement(actions=list(object_actions), resources=[bucket.arn_for_objects(f"{prefix}*")])
            )
            acknowledge(
                fn,
                f"AwsSolutions-IAM5[Resource::{arn_finding(bucket, f'/{prefix}*')}]",
                f"Objects under {prefix} only: the artifact or data prefix of this one model.",
            )
        acknowledge(
            fn, "AwsSolutions-IAM5[Resource::*]", "X-Ray PutTraceSegments/PutTelemetryRecords take no resource."
        )
        acknowledge(
            fn,
            f"AwsSolutions-IAM4[{BASIC_EXECUTION_ROLE}]",
            "AWSLambdaBasicExecutionRole grants only CloudWatch Logs writes for the function's own logs.",
        )
        acknowledge(
            fn,
            "AwsSolutions-L1",
            "The runtime is a per-model setting (python3.12 by default, matching the pinned layer wheels).",
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
                "docs: public serves only the Swagger UI and OpenAPI document (the API's shape, no data); "
                "every model route still needs its key or IAM",
            )

    def _acknowledge_cdk_internals(self) -> None:
        """CDK-managed singleton functions (artifact upload, bucket notifications, API Gateway logging role)."""
        bucket = self.storage.bucket
        helper_findings = {
            f"AwsSolutions-IAM4[{BASIC_EXECUTION_ROLE}]": "CDK's deploy-time helper writes only its own logs.",
            "AwsSolutions-L1": "CDK pins the runtime of its own deploy-time helper functions.",
            "AwsSolutions-IAM5[Resource::*]": "CDK's notification helper configures the bucket it is given.",
            f"AwsSolutions-IAM5[Resource::{arn_finding(bucket, '/*')}]": "CDK's upload helper fills the model bucket.",
            ASSET_BUCKET_FINDING: "CDK's upload helper reads the staged artifacts from the bootstrap asset bucket.",
        }
        for action in ("s3:GetBucket*", "s3:GetObject*", "s3:List*", "s3:Abort*", "s3:DeleteObject*"):
            helper_findings[f"AwsSolutions-IAM5[Action::{action}]"] = "CDK's upload helper syncs artifact files."
        for child in self.node.children:
            name = child.node.id
            if name.startswith("Custom::CDKBucketDeployment") or name.startswith("BucketNotificationsHandler"):
                for rule, reason in helper_findings.items():
                    acknowledge(child, rule, reason)
        acknowledge(
            self.api.api,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account role for CloudWatch logging is AWS's managed push-to-logs policy.",
        )

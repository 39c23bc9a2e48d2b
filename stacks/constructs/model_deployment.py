"""ModelDeployment: everything one model deploys: its three functions, their grants, event sources and alarms."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from contract import catalog, layout
from contract import environment as env
from stacks.config import ModelConfig
from stacks.constructs.big_batch import BigBatch, BigBatchProps
from stacks.constructs.event_sources import BatchInbox, BatchInboxProps, RequestQueue, RequestQueueProps
from stacks.constructs.inference_api import ApiRoute
from stacks.constructs.model_function import ModelFunction, ModelFunctionProps, retention
from stacks.constructs.model_storage import ModelStorage
from stacks.constructs.monitoring import Monitoring
from stacks.nag import BASIC_EXECUTION_ROLE, acknowledge, arn_finding

READ = ("s3:GetObject", "s3:GetObjectVersion")
WRITE = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")
BATCH_TIMEOUT_S = 300  # a batch file may hold many thousand rows


@dataclass(frozen=True, kw_only=True)
class ModelDeploymentProps:
    model: ModelConfig
    storage: ModelStorage  # the bucket the artifact and the data live in, and the artifact's upload
    service_name: str  # Powertools service, one per model: its metrics never mix with another's
    metrics_namespace: str
    account_concurrency: int  # the account's quota: the API function's limit where none is reserved
    code_dir: str | None = None  # zip: a folder holding handlers/
    layer: lambda_.ILayerVersion | None = None  # zip: the dependency layer for the model's runtime
    extra_layers: tuple[lambda_.ILayerVersion, ...] = ()  # zip: what the model's pipeline needs besides
    image_context: str | None = None  # image: a folder holding layers/Dockerfile and handlers/
    serves_docs: bool = False  # the API function serves /swagger: it reads the API's catalog


class ModelDeployment(Construct):
    """One model's API, batch and worker functions, each reading and writing only its model's own
    prefixes; the batch inbox and the request queue with their dead-letter queues; their alarms.

    Attributes: ``api``, ``batch``, ``worker`` (``ModelFunction``), ``inbox`` (``BatchInbox``),
    ``requests`` (``RequestQueue``), ``big_batch`` (``BigBatch``, or None when disabled), ``route``
    (the ``ApiRoute`` for ``InferenceApi``).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, props: ModelDeploymentProps, monitoring: Monitoring
    ) -> None:
        """``monitoring``: where the functions', queues' and model loads' alarms and widgets go."""
        super().__init__(scope, construct_id)
        self._props = props
        self._monitoring = monitoring
        model = props.model
        self.api, self.batch, self.worker = self._functions()
        self._grant()
        self._event_sources()
        self.big_batch = self._big_batch()
        self._watch()
        self.route = ApiRoute(model=model.name, target=self.api.alias, auth=model.settings.auth)

    def environment(self) -> dict[str, str]:
        """What every function of the model reads (``contract/environment.py`` names each variable)."""
        props, model = self._props, self._props.model
        bucket = props.storage.bucket.bucket_name
        return {
            env.MODEL_NAME: model.name,
            env.MODEL_BUCKET: bucket,
            env.MODEL_PREFIX: model.prefix,
            env.MANIFEST_SHA256: model.manifest_sha256,
            env.MANIFEST_VERSION_ID: props.storage.manifest_versions[model.name],
            env.DATA_BUCKET: bucket,
            env.INBOX_PREFIX: layout.inbox_prefix(model.name),
            env.OUTBOX_PREFIX: layout.outbox_prefix(model.name),
            env.RESULTS_PREFIX: layout.results_prefix(model.name),
            env.REQUESTS_PREFIX: layout.requests_prefix(model.name),
            env.SERVICE_NAME: props.service_name,
            env.METRICS_NAMESPACE: props.metrics_namespace,
            env.REPLY_QUEUES: ",".join(model.settings.reply_queue_arns),
            env.LOG_LEVEL: "INFO",
            env.TRACE_DISABLED: "false" if model.settings.tracing else "true",
        }

    def _function(
        self,
        role: str,
        handler: str,
        description: str,
        timeout_s: int | None = None,
        extra: dict[str, str] | None = None,
        serves_api: bool = False,
    ) -> ModelFunction:
        """``serves_api``: the function gets the model's reserved and provisioned concurrency, SnapStart
        and the load mode that goes with them; the queue-fed functions get neither."""
        props, model = self._props, self._props.model
        settings = model.settings
        load_mode = {env.LOAD_MODE: model.load_mode if serves_api else model.queue_load_mode}
        return ModelFunction(
            self,
            role,
            props=ModelFunctionProps(
                model=model,
                handler=handler,
                description=f"onnxfn {model.name} v{model.version}: {description}",
                environment={**self.environment(), **load_mode, **(extra or {})},
                code_dir=props.code_dir,
                layer=props.layer,
                extra_layers=props.extra_layers,
                image_context=props.image_context,
                timeout_s=timeout_s,
                reserved_concurrency=settings.reserved_concurrency if serves_api else None,
                provisioned_concurrency=settings.provisioned_concurrency if serves_api else 0,
                snapstart=settings.snapstart and serves_api,
            ),
        )

    def _docs_environment(self) -> dict[str, str]:
        props = self._props
        return {env.CATALOG_KEY: catalog.CATALOG_KEY} if props.serves_docs else {}

    def _functions(self) -> tuple[ModelFunction, ModelFunction, ModelFunction]:
        """The API, batch and worker functions, zip or image."""
        settings = self._props.model.settings
        api = self._function(
            "Api",
            "handlers.api.lambda_handler",
            "Open Inference Protocol and V1 predict",
            # the OpenAPI document declares how callers authenticate (Swagger UI's Authorize)
            extra={env.API_AUTH: settings.auth, **self._docs_environment()},
            serves_api=True,
        )
        batch = self._function(
            "Batch", "handlers.s3_batch.lambda_handler", "S3 batch files", max(settings.timeout_s, BATCH_TIMEOUT_S)
        )
        worker = self._function("Worker", "handlers.queue_worker.lambda_handler", "queued inference requests")
        return api, batch, worker

    def _grant(self) -> None:
        """Least privilege: each function reads and writes only its model's own prefixes."""
        model = self._props.model
        self._grant_objects(self.api, {model.prefix: READ})
        self._grant_objects(
            self.batch,
            {
                model.prefix: READ,
                layout.inbox_prefix(model.name): READ,
                # tagging: a big batch file's parts carry the tag the bucket's lifecycle expires them by
                layout.outbox_prefix(model.name): (*WRITE, "s3:PutObjectTagging"),
            },
        )
        self._grant_objects(
            self.worker,
            {
                model.prefix: READ,
                layout.requests_prefix(model.name): READ,
                layout.results_prefix(model.name): ("s3:PutObject",),
            },
        )
        # Without ListBucket, S3 answers a HEAD or GET of a missing key with 403 instead of 404.
        self._allow_listing(self.batch, [layout.outbox_prefix(model.name)])
        self._allow_listing(self.worker, [layout.requests_prefix(model.name)])
        if model.settings.reply_queue_arns:
            self.worker.function.add_to_role_policy(
                iam.PolicyStatement(actions=["sqs:SendMessage"], resources=list(model.settings.reply_queue_arns))
            )
        if model.settings.reply_queue_kms_key_arns:
            # SendMessage to a queue encrypted with a customer managed key needs the data key from KMS.
            self.worker.function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["kms:GenerateDataKey", "kms:Decrypt"],
                    resources=list(model.settings.reply_queue_kms_key_arns),
                )
            )
        for fn in (self.api, self.batch, self.worker):
            fn.function.node.add_dependency(self._props.storage.deployments[model.name])
        if self._props.serves_docs:
            storage = self._props.storage
            self.api.function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["s3:GetObject"], resources=[storage.bucket.arn_for_objects(catalog.CATALOG_KEY)]
                )
            )
            self.api.function.node.add_dependency(storage.catalog_deployment)

    def _event_sources(self) -> None:
        """The inbox's notifications and the request queue, each with its dead-letter queue."""
        model = self._props.model
        settings = model.settings
        self.inbox = BatchInbox(
            self,
            "Inbox",
            props=BatchInboxProps(
                bucket=self._props.storage.bucket,
                prefix=layout.inbox_prefix(model.name),
                function=self.batch.alias,
                timeout_s=max(settings.timeout_s, BATCH_TIMEOUT_S),
                max_concurrency=settings.batch_max_concurrency,
            ),
        )
        self.requests = RequestQueue(
            self,
            "Requests",
            props=RequestQueueProps(
                function=self.worker.alias,
                timeout_s=settings.timeout_s,
                batch_size=settings.batch_size,
                max_concurrency=settings.max_concurrency,
            ),
        )

    def _big_batch(self) -> BigBatch | None:
        """The state machine the batch function hands files too big for one invocation to."""
        model = self._props.model
        config = model.settings.big_batch
        if not config.enabled:
            return None
        machine = BigBatch(
            self,
            "BigBatch",
            props=BigBatchProps(
                bucket=self._props.storage.bucket,
                inbox_prefix=layout.inbox_prefix(model.name),
                function=self.batch.alias,
                items_per_batch=config.items_per_batch,
                max_concurrency=config.max_concurrency,
                tolerated_failure_percent=config.tolerated_failure_percent,
                csv_columns=model.csv_columns,
                log_retention=retention(model.settings.log_retention_days),
            ),
        )
        handoff = {
            env.BIG_BATCH_STATE_MACHINE: machine.state_machine_arn,
            env.BIG_BATCH_FORMATS: ",".join(["jsonl", *(["csv"] if model.csv_columns else [])]),
            **({env.BIG_BATCH_ROWS: str(config.rows)} if config.rows else {}),
            **({env.BIG_BATCH_BYTES: str(config.bytes)} if config.bytes else {}),
        }
        for name, value in handoff.items():
            self.batch.function.add_environment(name, value)
        self.batch.function.add_to_role_policy(
            iam.PolicyStatement(actions=["states:StartExecution"], resources=[machine.state_machine_arn])
        )
        # whether this source version was handed off already, whatever the prediction says now
        self.batch.function.add_to_role_policy(
            iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[machine.executions_arn])
        )
        acknowledge(
            self.batch,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:"
            f"{machine.name}:*]",
            "The batch function looks up its own state machine's executions, named after each file's version.",
        )
        return machine

    def _watch(self) -> None:
        """Alarms and dashboard widgets for the three functions, the two queues and the model loads."""
        model, monitoring = self._props.model, self._monitoring
        settings = model.settings
        label = model.construct_id
        thresholds = settings.alarms
        watched = {}
        api_limit = settings.reserved_concurrency or self._props.account_concurrency
        for role, fn, timeout_s, limit in (
            ("Api", self.api, settings.timeout_s, api_limit),
            ("Batch", self.batch, max(settings.timeout_s, BATCH_TIMEOUT_S), None),
            ("Worker", self.worker, settings.timeout_s, None),
        ):
            watched[role] = monitoring.watch_function(
                f"{label}{role}",
                fn.function,
                timeout_s=timeout_s,
                concurrency_limit=limit,
                thresholds=thresholds,
            )
        monitoring.watch_queue(f"{label}Inbox", self.inbox.queue, self.inbox.dead_letters, thresholds)
        monitoring.watch_queue(f"{label}Requests", self.requests.queue, self.requests.dead_letters, thresholds)
        if self.big_batch is not None:
            machine = self.big_batch
            monitoring.watch_state_machine(
                f"{label}BigBatch", machine.state_machine, machine.failed_executions, thresholds
            )
        load_alarm = monitoring.watch_model_loads(label, thresholds, service=self._props.service_name)
        if settings.canary:
            self.api.add_canary([watched["Api"][0], load_alarm])

    def _allow_listing(self, fn: ModelFunction, prefixes: list[str]) -> None:
        """``s3:ListBucket`` on the bucket, for keys under ``prefixes`` only."""
        fn.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self._props.storage.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}},
            )
        )

    def _grant_objects(self, fn: ModelFunction, grants: dict[str, tuple[str, ...]]) -> None:
        """Explicit object actions on this model's own prefixes only, each wildcard acknowledged by name."""
        bucket = self._props.storage.bucket
        for prefix, object_actions in grants.items():
            fn.function.add_to_role_policy(
                iam.PolicyStatement(actions=list(object_actions), resources=[bucket.arn_for_objects(f"{prefix}*")])
            )
            acknowledge(
                fn,
                f"AwsSolutions-IAM5[Resource::{arn_finding(bucket, f'/{prefix}*', seen_from=self)}]",
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

"""ModelStorage: the private, versioned model bucket, its access-log bucket and the artifact upload."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import custom_resources as cr
from constructs import Construct

from contract import big_batch, catalog, layout
from stacks.config import ModelConfig
from stacks.nag import BASIC_EXECUTION_ROLE, acknowledge, arn_finding


@dataclass(frozen=True, kw_only=True)
class ModelStorageProps:
    models: tuple[ModelConfig, ...]
    noncurrent_version_days: int = 30
    access_log_days: int = 365
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN


class ModelStorage(Construct):
    """Versioned, encrypted, SSL-only, private bucket with server access logs; artifacts uploaded on deploy.

    Attributes: ``bucket``, ``access_logs``, ``deployments`` (one per model, by name),
    ``manifest_versions`` (model name -> the S3 version id of its uploaded manifest, a deploy-time token),
    ``catalog_deployment`` (the API's catalog at ``contract.catalog.CATALOG_KEY``: every model's auth
    and manifest).
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: ModelStorageProps) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(props.access_log_days))],
            removal_policy=props.removal_policy,
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            "This bucket is the target of the model bucket's server access logs; logging it would recurse.",
        )
        self.bucket = s3.Bucket(
            self,
            "Models",
            versioned=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="models-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    noncurrent_version_expiration=Duration.days(props.noncurrent_version_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
                # the parts of a big batch file that was never assembled (contract/big_batch.py)
                s3.LifecycleRule(
                    id="BigBatchParts",
                    tag_filters=dict([big_batch.PART_TAG]),
                    expiration=Duration.days(big_batch.PART_DAYS),
                ),
            ],
            removal_policy=props.removal_policy,
        )
        self.deployments: dict[str, s3deploy.BucketDeployment] = {}
        self.manifest_versions: dict[str, str] = {}
        # One role for every manifest lookup (a policy each would cost a resource per model).
        self.lookup_role = iam.Role(
            self,
            "ManifestLookupRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSLambdaBasicExecutionRole")
            ],
        )
        manifests = f"{layout.MODELS_PREFIX}*/{layout.MANIFEST_FILE}"
        self.lookup_role.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[self.bucket.arn_for_objects(manifests)])
        )
        acknowledge(
            self.lookup_role,
            f"AwsSolutions-IAM5[Resource::{arn_finding(self.bucket, f'/{manifests}')}]",
            "The manifest lookup reads (HEAD) the uploaded manifests only, whatever the model and version.",
        )
        acknowledge(
            self.lookup_role,
            f"AwsSolutions-IAM4[{BASIC_EXECUTION_ROLE}]",
            "CDK's SDK-call helper writes only its own logs.",
        )
        for model in props.models:
            deployment = s3deploy.BucketDeployment(
                self,
                f"Deploy{model.construct_id}",
                sources=[s3deploy.Source.asset(str(model.artifact_dir))],
                destination_bucket=self.bucket,
                destination_key_prefix=model.prefix,
                prune=False,
                retain_on_delete=True,
                memory_limit=1024,
            )
            if self.deployments:
                # Each BucketDeployment makes an AWS CLI layer, but their one shared handler uses only
                # the first: the others would be unused layer versions, one a model.
                deployment.node.try_remove_child("AwsCliLayer")
            self.deployments[model.name] = deployment
            self.manifest_versions[model.name] = self._manifest_version(model)
        self.catalog_deployment = self._catalog(props.models)

    def _catalog(self, models: tuple[ModelConfig, ...]) -> s3deploy.BucketDeployment:
        """Every model's name, auth and manifest in one object, for the API's one OpenAPI document."""
        data = catalog.encode(
            [(m.name, m.settings.auth, json.loads((m.artifact_dir / layout.MANIFEST_FILE).read_text())) for m in models]
        )
        deployment = s3deploy.BucketDeployment(
            self,
            "DeployCatalog",
            sources=[s3deploy.Source.data(catalog.CATALOG_FILE, data.decode())],
            destination_bucket=self.bucket,
            destination_key_prefix=catalog.CATALOG_PREFIX,
            prune=False,
            retain_on_delete=True,
            memory_limit=1024,
        )
        deployment.node.try_remove_child("AwsCliLayer")  # the models' deployments made the handler's
        return deployment

    def _manifest_version(self, model: ModelConfig) -> str:
        """The version id S3 gave the uploaded manifest (a HEAD after the upload), so each function
        reads exactly the object its deploy put there, besides checking its sha256."""
        key = f"{model.prefix}{layout.MANIFEST_FILE}"
        call = cr.AwsSdkCall(
            service="S3",
            action="headObject",
            parameters={"Bucket": self.bucket.bucket_name, "Key": key},
            # the prefix holds the manifest's sha256: a new artifact is a new lookup
            physical_resource_id=cr.PhysicalResourceId.of(key),
            output_paths=["VersionId"],
        )
        lookup = cr.AwsCustomResource(
            self,
            f"ManifestVersion{model.construct_id}",
            on_create=call,
            on_update=call,
            role=self.lookup_role,
            install_latest_aws_sdk=False,
        )
        lookup.node.add_dependency(self.deployments[model.name])
        return lookup.get_response_field("VersionId")

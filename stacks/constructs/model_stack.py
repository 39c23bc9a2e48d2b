"""ModelStack: one model's nested stack, so that an app of many models keeps every template within
CloudFormation's limits (500 resources, 1 MB) while ``cdk deploy`` stays one command.

The app's stack keeps what the models share: the bucket and the artifact uploads, the REST API with
its key, usage plan, stage and server routes, the alarm topic and the overview dashboard. Each model's
stack holds its functions, queues, event source mappings, API routes, alarms and dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import NestedStack
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.constructs.inference_api import InferenceApi
from stacks.constructs.model_deployment import ModelDeployment, ModelDeploymentProps
from stacks.constructs.monitoring import Monitoring, MonitoringProps


@dataclass(frozen=True, kw_only=True)
class ModelStackProps:
    deployment: ModelDeploymentProps
    api: InferenceApi  # the app's REST API: the model's routes go under its /v2/models and /v1/models
    topic: sns.ITopic  # the app's alarm topic


class ModelStack(NestedStack):
    """Attributes: ``deployment`` (``ModelDeployment``), ``monitoring`` (the model's own ``Monitoring``,
    whose ``health`` composite alarm the overview dashboard shows)."""

    def __init__(self, scope: Construct, construct_id: str, *, props: ModelStackProps) -> None:
        model = props.deployment.model
        super().__init__(scope, construct_id, description=f"onnxfn model {model.name} v{model.version}")
        # Every logical id in the model's template starts with the model's: unique across the app's
        # templates, so `onnxfn serve` can read them all as one.
        label = model.construct_id
        self.monitoring = Monitoring(
            self,
            f"{label}Monitoring",
            props=MonitoringProps(
                alarm_email=None,
                metrics_namespace=props.deployment.metrics_namespace,
                service_name=props.deployment.service_name,
                topic=props.topic,
            ),
        )
        self.deployment = ModelDeployment(self, label, props=props.deployment, monitoring=self.monitoring)
        props.api.add_model_routes(Construct(self, f"{label}Routes"), self.deployment.route)
        self.monitoring.finish(health=model.name)

"""InferenceApi: one REST API whose /v2 and /v1 routes of each model go to that model's function."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.nag import acknowledge

# Binary tensors arrive with or without a Content-Type (tritonclient sends none), so every body is
# passed base64-encoded and the handler decodes it; responses flagged isBase64Encoded go back as bytes.
BINARY_MEDIA_TYPES = ["*/*"]
PUBLIC = "none"  # a method that needs neither an API key nor IAM: only the public Swagger UI


@dataclass(frozen=True, kw_only=True)
class ApiRoute:
    model: str
    target: lambda_.IFunction
    auth: str  # "api_key" | "iam"


@dataclass(frozen=True, kw_only=True)
class InferenceApiProps:
    routes: tuple[ApiRoute, ...]
    throttle_rate: float
    throttle_burst: int
    stage_name: str = "prod"
    docs: str = "public"  # GET /swagger: "public" | "private" (the first model's auth) | "off"


class InferenceApi(Construct):
    """REST API with access logs, request validation, binary media types, API key + usage plan (or IAM).

    Server-level routes (``/v2``, ``/v2/health/*``, ``/swagger``) go to the first model's function;
    ``/swagger`` is open to anyone (``docs="public"``), has the first model's auth (``"private"``) or
    is left out (``"off"``). Attributes: ``api``, ``access_logs``, ``api_key`` (or None),
    ``usage_plan`` (or None), ``docs_method`` (or None).
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: InferenceApiProps) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.DESTROY
        )
        self.api = self._rest_api(props)
        self.validator = apigw.RequestValidator(
            self,
            "Validator",
            rest_api=self.api,
            validate_request_parameters=True,
            validate_request_body=True,
        )
        self.api_key: apigw.IApiKey | None = None
        self.usage_plan: apigw.UsagePlan | None = None
        if any(route.auth == "api_key" for route in props.routes):
            self.api_key = self.api.add_api_key("ApiKey")
            self.usage_plan = self.api.add_usage_plan(
                "UsagePlan",
                throttle=apigw.ThrottleSettings(rate_limit=props.throttle_rate, burst_limit=props.throttle_burst),
                api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
            )
            self.usage_plan.add_api_key(self.api_key)
        v2 = self.api.root.add_resource("v2")
        v1 = self.api.root.add_resource("v1")
        self.docs_method: apigw.Method | None = self._server_routes(v2, props)
        self._model_routes(v2.add_resource("models"), v1.add_resource("models"), props.routes)
        self._acknowledge(props)

    def _rest_api(self, props: InferenceApiProps) -> apigw.RestApi:
        return apigw.RestApi(
            self,
            "Api",
            description="onnxfn: Open Inference Protocol (KServe V2) and TF Serving / KServe V1 predict",
            binary_media_types=BINARY_MEDIA_TYPES,
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            deploy_options=apigw.StageOptions(
                stage_name=props.stage_name,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                metrics_enabled=True,
                tracing_enabled=True,
                throttling_rate_limit=props.throttle_rate,
                throttling_burst_limit=props.throttle_burst,
            ),
        )

    def _server_routes(self, v2: apigw.Resource, props: InferenceApiProps) -> apigw.Method | None:
        """``/v2``, ``/v2/health/{live,ready}`` and ``/swagger`` on the first model's function; returns
        the ``/swagger`` method (None when docs are off)."""
        first = props.routes[0]
        server = self._integration(first)
        self._method(v2, "GET", server, first.auth)
        health = v2.add_resource("health")
        for leaf in ("live", "ready"):
            self._method(health.add_resource(leaf), "GET", server, first.auth)
        if props.docs == "off":
            return None
        public = props.docs == "public"
        swagger = self.api.root.add_resource("swagger")
        docs = self._method(swagger, "GET", server, PUBLIC if public else first.auth)
        if public:
            reason = (
                "GET /swagger is public on purpose (onnxfn.docs: public): Swagger UI and the OpenAPI "
                "document hold only the API's shape, no data; every model route keeps its API key or IAM."
            )
            acknowledge(docs, "AwsSolutions-APIG4", reason)
            acknowledge(docs, "AwsSolutions-COG4", reason)
        return docs

    def _model_routes(self, v2_models: apigw.Resource, v1_models: apigw.Resource, routes: tuple[ApiRoute, ...]) -> None:
        """Per model: ``/v2/models/NAME[/...]``, ``/v1/models/NAME[/...]`` and ``/v1/models/NAME:predict``."""
        for route in routes:
            integration = self._integration(route)
            model = v2_models.add_resource(route.model)
            self._method(model, "GET", integration, route.auth)
            self._method(model.add_resource("{proxy+}"), "ANY", integration, route.auth)
            status = v1_models.add_resource(route.model)
            self._method(status, "GET", integration, route.auth)
            self._method(status.add_resource("{proxy+}"), "ANY", integration, route.auth)
            self._method(v1_models.add_resource(f"{route.model}:predict"), "POST", integration, route.auth)

    def _acknowledge(self, props: InferenceApiProps) -> None:
        acknowledge(
            self.api,
            "AwsSolutions-APIG3",
            "WAF is an account-level choice with its own cost; the stage has throttling and a usage plan.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-COG4",
            "Clients are services and Triton/KServe clients: API keys or IAM (SigV4), not Cognito users.",
        )
        if any(route.auth == "api_key" for route in props.routes):
            acknowledge(
                self.api,
                "AwsSolutions-APIG4",
                "Methods require an API key bound to a throttled usage plan; set auth: iam for SigV4.",
            )

    def _integration(self, route: ApiRoute) -> apigw.LambdaIntegration:
        return apigw.LambdaIntegration(route.target, proxy=True)

    def _method(self, resource: apigw.IResource, verb: str, integration: apigw.Integration, auth: str) -> apigw.Method:
        """``auth``: "api_key", "iam" or ``PUBLIC``."""
        return resource.add_method(
            verb,
            integration,
            api_key_required=auth == "api_key",
            authorization_type=apigw.AuthorizationType.IAM if auth == "iam" else apigw.AuthorizationType.NONE,
            request_validator=self.validator,
        )

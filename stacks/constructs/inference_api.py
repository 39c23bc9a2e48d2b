"""InferenceApi: one REST API whose /v2 and /v1 routes of each model go to that model's function."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.constructs.gateway_responses import GatewayResponsesProps, add_gateway_responses
from stacks.nag import acknowledge

# Binary tensors arrive with or without a Content-Type (tritonclient sends none), so every body is
# passed base64-encoded and the handler decodes it; responses flagged isBase64Encoded go back as bytes.
BINARY_MEDIA_TYPES = ["*/*"]
MODELS_PER_POLICY = 10  # five route ARNs a model, ~100 characters each once resolved
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
    """REST API with access logs, binary media types, API key + usage plan (or IAM), and API Gateway's
    own error answers in the project's JSON shape.

    Server-level routes (``/v2``, ``/v2/health/*``, ``/swagger``) go to the first model's function;
    ``/swagger`` is open to anyone (``docs="public"``), has the first model's auth (``"private"``) or
    is left out (``"off"``). Attributes: ``api``, ``access_logs``, ``api_key`` (or None),
    ``usage_plan`` (or None), ``docs_method`` (or None), ``gateway_responses`` (type -> response),
    ``invoke_policies`` (managed policies allowing ``execute-api:Invoke`` on the IAM routes; none
    without them).

    No request validator: with binary media type ``*/*`` every body reaches API Gateway as binary,
    which a JSON-schema model cannot check, and tritonclient's binary requests carry no Content-Type.
    The function checks each request against the manifest before anything is allocated.
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: InferenceApiProps) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.DESTROY
        )
        self.api = self._rest_api(props)
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
        self.gateway_responses = add_gateway_responses(
            self.api,
            GatewayResponsesProps(
                models=tuple(route.model for route in props.routes),
                iam=any(route.auth == "iam" for route in props.routes),
                throttle_rate=props.throttle_rate,
                throttle_burst=props.throttle_burst,
            ),
        )
        self.invoke_policies = self._invoke_policies(props)
        self._acknowledge(props)

    def _invoke_policies(self, props: InferenceApiProps) -> list[iam.ManagedPolicy]:
        """What a caller's role needs for the models with ``auth: iam``: ``execute-api:Invoke`` on their
        exact routes (and the server routes when they share that auth), nothing else; one managed
        policy per ``MODELS_PER_POLICY`` models, within IAM's 6,144 characters a policy."""
        signed = [route.model for route in props.routes if route.auth == "iam"]
        groups: list[list[tuple[str, str]]] = []
        for start in range(0, len(signed), MODELS_PER_POLICY):
            routes = []
            for model in signed[start : start + MODELS_PER_POLICY]:
                routes += [("*", f"/v2/models/{model}"), ("*", f"/v2/models/{model}/*")]
                routes += [("*", f"/v1/models/{model}"), ("*", f"/v1/models/{model}/*")]
                routes.append(("POST", f"/v1/models/{model}:predict"))
            groups.append(routes)
        if signed and props.routes[0].auth == "iam":
            groups[0] += [("GET", "/v2"), ("GET", "/v2/health/*")]
            if props.docs == "private":
                groups[0].append(("GET", "/swagger"))
        stack = Stack.of(self)
        api_id = stack.resolve(stack.get_logical_id(self.api.node.default_child))  # type: ignore[arg-type]
        policies = []
        for index, routes in enumerate(groups):
            policy = iam.ManagedPolicy(
                self,
                f"InvokePolicy{index + 1 if index else ''}",
                description="onnxfn: call the inference API's IAM routes (attach to the callers' roles)",
                statements=[
                    iam.PolicyStatement(
                        actions=["execute-api:Invoke"],
                        resources=[self.api.arn_for_execute_api(verb, path, props.stage_name) for verb, path in routes],
                    )
                ],
            )
            for verb, path in routes:
                arn = f"arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:<{api_id}>"
                acknowledge(
                    policy,
                    f"AwsSolutions-IAM5[Resource::{arn}/{props.stage_name}/{verb}{path}]",
                    "Invoke on this model's own routes (any method, any sub-path of the model): what its callers need.",
                )
            policies.append(policy)
        return policies

    def _rest_api(self, props: InferenceApiProps) -> apigw.RestApi:
        return apigw.RestApi(
            self,
            "Api",
            description="onnxfn: Open Inference Protocol (KServe V2) and TF Serving / KServe V1 predict",
            binary_media_types=BINARY_MEDIA_TYPES,
            # API Gateway logs through one role per account and Region, shared by every REST API
            # there: `cdk destroy` must leave it in place.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
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
        acknowledge(
            self.api,
            "AwsSolutions-APIG2",
            "Bodies are binary to API Gateway (binary media type */*; tritonclient sends no Content-Type), so a "
            "JSON-schema validator cannot check them; the function checks every request against the manifest.",
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
        )

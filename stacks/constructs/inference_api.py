"""InferenceApi: one REST API whose /v2 and /v1 routes of each model go to that model's function."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct

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
    models: tuple[tuple[str, str], ...]  # (model, auth) in the app's order; the first serves the server routes
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
        self._props = props
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.DESTROY
        )
        self.api = self._rest_api(props)
        self.api_key: apigw.IApiKey | None = None
        self.usage_plan: apigw.UsagePlan | None = None
        if any(auth == "api_key" for _, auth in props.models):
            self.api_key = self.api.add_api_key("ApiKey")
            self.usage_plan = self.api.add_usage_plan(
                "UsagePlan",
                throttle=apigw.ThrottleSettings(rate_limit=props.throttle_rate, burst_limit=props.throttle_burst),
                api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
            )
            self.usage_plan.add_api_key(self.api_key)
        self.v2 = self.api.root.add_resource("v2")
        v1 = self.api.root.add_resource("v1")
        self.v2_models = self.v2.add_resource("models")
        self.v1_models = v1.add_resource("models")
        self.docs_method: apigw.Method | None = None
        self.gateway_responses = add_gateway_responses(
            self.api,
            GatewayResponsesProps(
                models=tuple(model for model, _ in props.models),
                iam=any(auth == "iam" for _, auth in props.models),
                throttle_rate=props.throttle_rate,
                throttle_burst=props.throttle_burst,
            ),
        )
        self.invoke_policies = self._invoke_policies(props)
        self._acknowledge(props)

    def add_model_routes(self, scope: Construct, route: ApiRoute) -> None:
        """``/v2/models/NAME[/...]``, ``/v1/models/NAME[/...]`` and ``/v1/models/NAME:predict``, created
        in ``scope`` (the model's own stack) under this API's ``/v2/models`` and ``/v1/models``."""
        model = apigw.Resource(scope, "V2Model", parent=self.v2_models, path_part=route.model)
        status = apigw.Resource(scope, "V1Model", parent=self.v1_models, path_part=route.model)
        predict = apigw.Resource(scope, "V1Predict", parent=self.v1_models, path_part=f"{route.model}:predict")
        self._method(model, "GET", route, route.auth)
        self._method(model.add_resource("{proxy+}"), "ANY", route, route.auth)
        self._method(status, "GET", route, route.auth)
        self._method(status.add_resource("{proxy+}"), "ANY", route, route.auth)
        self._method(predict, "POST", route, route.auth)
        for resource in (model, status, predict):
            self._acknowledge_methods(resource, route.auth)

    def _invoke_policies(self, props: InferenceApiProps) -> list[iam.ManagedPolicy]:
        """What a caller's role needs for the models with ``auth: iam``: ``execute-api:Invoke`` on their
        exact routes (and the server routes when they share that auth), nothing else; one managed
        policy per ``MODELS_PER_POLICY`` models, within IAM's 6,144 characters a policy."""
        signed = [model for model, auth in props.models if auth == "iam"]
        groups: list[list[tuple[str, str]]] = []
        for start in range(0, len(signed), MODELS_PER_POLICY):
            routes = []
            for model in signed[start : start + MODELS_PER_POLICY]:
                routes += [("*", f"/v2/models/{model}"), ("*", f"/v2/models/{model}/*")]
                routes += [("*", f"/v1/models/{model}"), ("*", f"/v1/models/{model}/*")]
                routes.append(("POST", f"/v1/models/{model}:predict"))
            groups.append(routes)
        if signed and props.models[0][1] == "iam":
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

    def add_server_routes(self, first: ApiRoute) -> None:
        """``/v2``, ``/v2/health/{live,ready}`` and ``/swagger`` on the first model's function; sets
        ``docs_method`` (None when docs are off)."""
        props = self._props
        self._method(self.v2, "GET", first, first.auth)
        health = self.v2.add_resource("health")
        for leaf in ("live", "ready"):
            self._method(health.add_resource(leaf), "GET", first, first.auth)
        if props.docs == "off":
            return
        public = props.docs == "public"
        swagger = self.api.root.add_resource("swagger")
        docs = self._method(swagger, "GET", first, PUBLIC if public else first.auth)
        if public:
            reason = (
                "GET /swagger is public on purpose (onnxfn.docs: public): Swagger UI and the OpenAPI "
                "document hold only the API's shape (every model's routes, tensor names and shapes), no data; "
                "every model route keeps its API key or IAM; set docs: private or off to hide it."
            )
            acknowledge(docs, "AwsSolutions-APIG4", reason)
            acknowledge(docs, "AwsSolutions-COG4", reason)
        self.docs_method = docs

    def _acknowledge(self, props: InferenceApiProps) -> None:
        acknowledge(
            self.api,
            "AwsSolutions-APIG3",
            "WAF is an account-level choice with its own cost; the stage has throttling and a usage plan.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-APIG2",
            "Bodies are binary to API Gateway (binary media type */*; tritonclient sends no Content-Type), so a "
            "JSON-schema validator cannot check them; the function checks every request against the manifest.",
        )
        self._acknowledge_methods(self.api, props.models[0][1])

    @staticmethod
    def _acknowledge_methods(scope: IConstruct, auth: str) -> None:
        """The methods under ``scope`` (the API's own, or a model's routes in its stack)."""
        acknowledge(
            scope,
            "AwsSolutions-COG4",
            "Clients are services and Triton/KServe clients: API keys or IAM (SigV4), not Cognito users.",
        )
        if auth == "api_key":
            acknowledge(
                scope,
                "AwsSolutions-APIG4",
                "Methods require an API key bound to a throttled usage plan; set auth: iam for SigV4.",
            )

    def _method(self, resource: apigw.IResource, verb: str, route: ApiRoute, auth: str) -> apigw.Method:
        """``auth``: "api_key", "iam" or ``PUBLIC``. The invoke permission names the stage by its name, not
        the Stage resource: a model's stack must not depend on the Stage, whose Deployment depends on
        every model's methods."""
        # LambdaIntegration without its own permission, which would name the Stage (or any stage)
        integration = apigw.AwsIntegration(
            proxy=True, service="lambda", path=f"2015-03-31/functions/{route.target.function_arn}/invocations"
        )
        method = resource.add_method(
            verb,
            integration,
            api_key_required=auth == "api_key",
            authorization_type=apigw.AuthorizationType.IAM if auth == "iam" else apigw.AuthorizationType.NONE,
        )
        route.target.add_permission(
            f"Invoke{verb}{re.sub(r'[^A-Za-z0-9]', '', resource.path.title())}",
            principal=iam.ServicePrincipal("apigateway.amazonaws.com"),
            scope=method,
            source_arn=self.api.arn_for_execute_api(
                "*" if verb == "ANY" else verb, re.sub(r"\{[^}]*\}", "*", resource.path), self._props.stage_name
            ),
        )
        return method

"""API Gateway's own answers (no route, no key, throttled, too large, timed out) in the project's
JSON error shape, ``{"error": "..."}``, the shape every function answer has.

A gateway response's template is not run through VTL: API Gateway only substitutes ``$context``
variables, so a message is static text or ``$context.error.messageString`` (already a quoted JSON
string). ``onnxfn serve``'s gateway renders the same resources from the template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import aws_apigateway as apigw

from contract.limits import API_BODY_BYTES, SYNC_REQUEST_BYTES

JSON = "application/json"
# API Gateway's own message, as a JSON string: for answers whose text comes from AWS (IAM denials,
# signature mismatches) and for every type not named below.
AWS_MESSAGE = '{"error": $context.error.messageString}'


@dataclass(frozen=True, kw_only=True)
class GatewayResponsesProps:
    models: tuple[str, ...]  # the served models, named in the answer to an unknown route
    iam: bool  # some route is signed with SigV4: a missing signature also answers "no route"
    throttle_rate: float
    throttle_burst: int


def _static(message: str) -> str:
    return json.dumps({"error": message})


def responses(props: GatewayResponsesProps) -> dict[str, tuple[str | None, str]]:
    """Response type -> (status code or None for API Gateway's own, template)."""
    served = ", ".join(props.models)
    routes = (
        f"this API serves the models {served}: POST /v2/models/<name>/infer (Open Inference Protocol), "
        "POST /v1/models/<name>:predict (V1), GET /v2/models/<name> (metadata), GET /v2/health/ready"
    )
    if props.iam:
        # API Gateway answers an unsigned request to an IAM route with the same response type as a
        # route it does not have, so the status stays 403 and the message names both causes.
        missing = (
            "403",
            _static(f"no such route or model, or the request is not signed with SigV4 (auth: iam); {routes}"),
        )
    else:
        missing = ("404", _static(f"no such route or model; {routes}"))
    return {
        "MISSING_AUTHENTICATION_TOKEN": missing,
        "INVALID_API_KEY": (
            "403",
            _static("missing or invalid API key: send it in the x-api-key header (the ApiKeyId stack output)"),
        ),
        "THROTTLED": (
            "429",
            _static(
                f"too many requests: the API takes {props.throttle_rate:g} requests per second with bursts of "
                f"{props.throttle_burst} (onnxfn.throttle_rate, onnxfn.throttle_burst); retry with backoff"
            ),
        ),
        "QUOTA_EXCEEDED": ("429", _static("the usage plan's request quota for this API key is used up")),
        "REQUEST_TOO_LARGE": (
            "413",
            _static(
                "request too large: a body reaches the function base64-encoded inside Lambda's "
                f"{SYNC_REQUEST_BYTES:,}-byte event, so at most {API_BODY_BYTES:,} bytes fit; "
                "put larger inputs in the S3 inbox"
            ),
        ),
        "INTEGRATION_TIMEOUT": (
            "504",
            _static("the model did not answer within API Gateway's 29 s integration timeout"),
        ),
        "DEFAULT_4XX": (None, AWS_MESSAGE),
        "DEFAULT_5XX": (None, AWS_MESSAGE),
    }


def add_gateway_responses(api: apigw.RestApi, props: GatewayResponsesProps) -> dict[str, apigw.GatewayResponse]:
    """One ``AWS::ApiGateway::GatewayResponse`` per type in :func:`responses`."""
    added = {}
    for name, (status, template) in responses(props).items():
        response_type = apigw.ResponseType.of(name)
        added[name] = api.add_gateway_response(
            "".join(part.capitalize() for part in name.split("_")),
            type=response_type,
            status_code=status,
            templates={JSON: template},
        )
    return added

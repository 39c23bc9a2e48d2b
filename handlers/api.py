"""HTTPS entry point: the Open Inference Protocol (KServe V2) and TF Serving / KServe V1 predict,
behind an API Gateway REST proxy integration, with an OpenAPI document and Swagger UI at /swagger.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from contract.manifest import Manifest
from handlers.runtime import jsonio, lifecycle, openapi
from handlers.runtime.codecs import oip, v1
from handlers.runtime.entry import entry_point
from handlers.runtime.errors import ModelNotFound, OnnxfnError, RouteNotFound
from handlers.runtime.http import header, request_body
from handlers.runtime.model_store import LoadedModel, get_store
from handlers.runtime.observability import MetricUnit, count_error, logger, metrics
from handlers.runtime.version import __version__

# Routes build their own responses (JSON or binary); Response[Any] keeps Powertools' validation
# from reshaping them while the routes still appear in the OpenAPI document.
Reply = Response[Any]

app = APIGatewayRestResolver()


@app.get("/swagger", include_in_schema=False)
def swagger_ui() -> Reply:
    """Swagger UI, or the OpenAPI document with ``?format=json``: every model of the API's catalog, or
    this function's model alone where the catalog is not set or cannot be read."""
    event = app.current_event
    want_json = (event.query_string_parameters or {}).get("format") == "json"
    store = get_store()
    content_type, body = openapi.swagger(
        app, event.request_context.stage, want_json, model=store.settings.model_name, catalog=store.catalog()
    )
    return Response(status_code=200, content_type=content_type, body=body)


def _json(status: int, document: Any) -> Reply:
    return Response(status_code=status, content_type="application/json", body=jsonio.dumps(document).decode("utf-8"))


def _manifest(model: str, version: str | None = None) -> Manifest:
    """The manifest of the model this function serves, if the path names it (and its version)."""
    store = get_store()
    if model != store.settings.model_name:
        raise ModelNotFound(f"model {model!r} is not served here; this endpoint serves {store.settings.model_name!r}")
    manifest = store.manifest()
    if version is not None and version != manifest.version:
        raise ModelNotFound(f"model {model!r} has no version {version!r}; available: {manifest.version!r}")
    return manifest


def _loaded(model: str, version: str | None = None) -> LoadedModel:
    _manifest(model, version)
    return get_store().get_model()


def _body() -> bytes:
    raw = request_body(app.current_event.raw_event, get_store().settings.max_request_bytes)
    metrics.add_metric(name="RequestBytes", unit=MetricUnit.Bytes, value=len(raw))
    return raw


# --- server ---------------------------------------------------------------------------------------


@app.get("/v2", summary="Server metadata", tags=["Open Inference Protocol"])
def server_metadata() -> Reply:
    return _json(200, {"name": "onnxfn", "version": __version__, "extensions": ["binary_tensor_data"]})


@app.get("/v2/health/live", summary="Liveness", tags=["Open Inference Protocol"])
def live() -> Reply:
    return _json(200, {"live": True})


@app.get(
    "/v2/health/ready", summary="Readiness: loads the model if it is not loaded yet", tags=["Open Inference Protocol"]
)
def ready() -> Reply:
    store = get_store()
    store.get_model()
    return _json(200, {"ready": True})


# --- models ---------------------------------------------------------------------------------------


def _metadata(manifest: Manifest) -> Reply:
    return _json(
        200,
        {
            "name": manifest.name,
            "versions": [manifest.version],
            "platform": manifest.platform,
            "inputs": [t.to_dict() for t in manifest.inputs],
            "outputs": [t.to_dict() for t in manifest.outputs],
        },
    )


@app.get("/v2/models/<model>", summary="Model metadata", tags=["Open Inference Protocol"])
def model_metadata(model: str) -> Reply:
    return _metadata(_manifest(model))


@app.get("/v2/models/<model>/versions/<version>", summary="Model version metadata", tags=["Open Inference Protocol"])
def model_version_metadata(model: str, version: str) -> Reply:
    return _metadata(_manifest(model, version))


@app.get("/v2/models/<model>/ready", summary="Model readiness: loads the model", tags=["Open Inference Protocol"])
def model_ready(model: str) -> Reply:
    _loaded(model)
    return _json(200, {"name": model, "ready": True})


@app.get(
    "/v2/models/<model>/versions/<version>/ready", summary="Model version readiness", tags=["Open Inference Protocol"]
)
def model_version_ready(model: str, version: str) -> Reply:
    _loaded(model, version)
    return _json(200, {"name": model, "ready": True})


def _infer(model: str, version: str | None) -> Reply:
    manifest = _manifest(model, version)
    body = _body()
    request = oip.decode_infer_request(body, header(app.current_event.raw_event, oip.HEADER_LENGTH), manifest)
    loaded = get_store().get_model()
    results = loaded.run(request.inputs, request.outputs)
    payload, headers = oip.encode_infer_response(manifest, request, results)
    logger.info(
        "inference",
        extra={
            "route": "v2",
            "inputs": {name: list(array.shape) for name, array in request.inputs.items()},
            "request_bytes": len(body),
            "response_bytes": len(payload),
            "binary_outputs": sorted(request.binary_outputs),
        },
    )
    content_type = headers.pop("Content-Type")
    body_out: bytes | str = payload if request.binary_outputs else payload.decode("utf-8")
    return Response(status_code=200, content_type=content_type, body=body_out, headers=headers)


@app.post(
    "/v2/models/<model>/infer",
    summary="Inference (JSON or binary tensor extension)",
    tags=["Open Inference Protocol"],
    openapi_extensions=openapi.INFER_OPERATION,
)
def infer(model: str) -> Reply:
    return _infer(model, None)


@app.post(
    "/v2/models/<model>/versions/<version>/infer",
    summary="Inference on a model version",
    tags=["Open Inference Protocol"],
    openapi_extensions=openapi.INFER_OPERATION,
)
def infer_version(model: str, version: str) -> Reply:
    return _infer(model, version)


# --- TF Serving / KServe V1 -----------------------------------------------------------------------


def _predict(model: str, version: str | None) -> Reply:
    manifest = _manifest(model, version)
    fmt, inputs = v1.decode_predict_request(_body(), manifest)
    outputs = [t.name for t in manifest.outputs]
    results = get_store().get_model().run(inputs, outputs)
    logger.info(
        "inference", extra={"route": "v1", "format": fmt, "inputs": {name: list(a.shape) for name, a in inputs.items()}}
    )
    return _json(200, v1.encode_predict_response(fmt, outputs, results))


@app.post(
    "/v1/models/<model>:predict",
    summary="TF Serving / KServe V1 predict",
    tags=["V1"],
    openapi_extensions=openapi.PREDICT_OPERATION,
)
def predict(model: str) -> Reply:
    return _predict(model, None)


@app.post(
    "/v1/models/<model>/versions/<version>:predict",
    summary="V1 predict on a model version",
    tags=["V1"],
    openapi_extensions=openapi.PREDICT_OPERATION,
)
def predict_version(model: str, version: str) -> Reply:
    return _predict(model, version)


@app.get("/v1/models/<model>", summary="TF Serving model status", tags=["V1"])
def model_status(model: str) -> Reply:
    manifest = _manifest(model)
    state = "AVAILABLE" if get_store().ready else "LOADING"
    status = {"error_code": "OK", "error_message": ""}
    return _json(200, {"model_version_status": [{"version": manifest.version, "state": state, "status": status}]})


# --- errors: the one place they become responses --------------------------------------------------


@app.exception_handler(OnnxfnError)  # type: ignore[untyped-decorator]
def handle_onnxfn_error(error: OnnxfnError) -> Reply:
    return _error_response(error)


def _error_response(error: OnnxfnError) -> Reply:
    count_error(error.kind)
    log = logger.warning if error.status_code < 500 else logger.error
    log("request failed", extra={"status": error.status_code, "kind": error.kind, "reason": error.message})
    return _json(error.status_code, {"error": error.message})


@app.not_found
def handle_not_found(_: Exception) -> Reply:
    event = app.current_event
    return _error_response(
        RouteNotFound(f"no route for {event.http_method} {event.path}; see /swagger for the routes this API offers")
    )


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def handle_unexpected(error: Exception) -> Reply:
    count_error("Internal")
    logger.exception("unexpected error")
    request_id = app.lambda_context.aws_request_id if app.lambda_context else "unknown"
    return _json(500, {"error": f"internal error; request id {request_id}"})


# --- entry point ----------------------------------------------------------------------------------


lifecycle.init_environment()


@entry_point(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

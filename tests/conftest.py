"""Shared fixtures: moto S3 holding the real demo artifacts, and a client for the real API handler."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

# Set before any handler module is imported: moto only, no tracing daemon, quiet logs.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_NAMESPACE": "onnxfn-tests",
        "POWERTOOLS_SERVICE_NAME": "onnxfn-tests",
    }
)
os.environ.pop("AWS_PROFILE", None)

from moto import mock_aws

from handlers.runtime import lifecycle
from handlers.runtime.model_store import ModelStore, reset_store
from handlers.runtime.settings import load_settings
from onnxfn.local.context import LocalContext
from onnxfn.local.events import api_gateway_event, response_body
from onnxfn.local.upload import upload_artifact

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "model_artifacts"
BUCKET = "onnxfn-test-models"


def artifact(name: str) -> Path:
    path = ARTIFACTS / name
    if not (path / "manifest.json").exists():
        pytest.fail(f"{path} is not built; run `make models` (make test builds it)")
    return path


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ApiClient:
    """Invokes ``handlers.api.lambda_handler`` with API Gateway REST proxy events."""

    def __init__(self) -> None:
        from handlers import api

        self.api = api

    def call(
        self,
        method: str,
        path: str,
        body: bytes | str | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        *,
        event: dict[str, Any] | None = None,
    ) -> Reply:
        if isinstance(body, dict):
            body = json.dumps(body)
        headers = headers if headers is not None else {"Content-Type": "application/json"}
        event = event or api_gateway_event(method, path, body, headers)
        response = self.api.lambda_handler(event, LocalContext())
        merged = dict(response.get("headers") or {})
        for key, values in (response.get("multiValueHeaders") or {}).items():
            merged.setdefault(key, values[-1])
        return Reply(response["statusCode"], merged, response_body(response))

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Reply:
        return self.call("POST", path, body, headers)

    def get(self, path: str) -> Reply:
        return self.call("GET", path)


@pytest.fixture(scope="session")
def aws() -> Iterator[Any]:
    """One moto S3 for the session; artifacts are uploaded once and shared by read-only tests."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client


@pytest.fixture
def s3(aws: Any) -> Iterator[Any]:
    lifecycle.reset()  # each test starts as a new execution environment
    yield aws
    reset_store()
    lifecycle.reset()


_UPLOADS: dict[str, dict[str, str]] = {}


@dataclass
class Served:
    name: str
    environment: dict[str, str]
    store: ModelStore
    get_calls: list[str]
    client: ApiClient


@pytest.fixture
def serve(s3: Any) -> Callable[..., Served]:
    """Point a fresh (cold) model store at an uploaded artifact; counts the store's S3 GETs.

    ``private=True`` uploads to a prefix of the test's own, for tests that change the objects.
    """

    def _serve(name: str, extra_env: dict[str, str] | None = None, *, private: bool = False) -> Served:
        if private:
            environment = upload_artifact(s3, BUCKET, artifact(name), f"models/{name}/{uuid.uuid4().hex}/")
        else:
            if name not in _UPLOADS:
                _UPLOADS[name] = upload_artifact(s3, BUCKET, artifact(name))
            environment = dict(_UPLOADS[name])
        environment.update(extra_env or {})
        calls: list[str] = []

        def factory() -> Any:
            client = boto3.client("s3", region_name="us-east-1")
            client.meta.events.register(
                "before-parameter-build.s3.GetObject", lambda params, **_: calls.append(params["Key"])
            )
            return client

        store = ModelStore(load_settings(environment), s3_client_factory=factory)
        reset_store(store)
        return Served(name, environment, store, calls, ApiClient())

    return _serve

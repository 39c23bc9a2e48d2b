"""The model's download starts first thing in init and the store takes its bytes, still checking
every one of them; anything wrong with the download leaves the store to fetch on its own."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from handlers.runtime import prefetch
from handlers.runtime.errors import ModelUnavailable
from handlers.runtime.model_store import ModelStore
from handlers.runtime.settings import load_settings
from onnxfn.local.upload import upload_artifact
from tests.conftest import artifact

BUCKET = "onnxfn-prefetch"


@pytest.fixture(scope="module")
def server():
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto._server.server_port}"
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    s3.create_bucket(Bucket=BUCKET)
    yield endpoint, s3
    moto.stop()


@pytest.fixture(autouse=True)
def fresh():
    prefetch.discard()
    yield
    prefetch.discard()


def _environment(server: Any, model: str, prefix: str | None = None, **extra: str) -> dict[str, str]:
    endpoint, s3 = server
    return {
        **upload_artifact(s3, BUCKET, artifact(model), prefix),
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "_HANDLER": "handlers.api.lambda_handler",
        "AWS_LAMBDA_FUNCTION_NAME": f"onnxfn-{model}",
        "LOAD_MODE": "eager",
        **extra,
    }


def _store(server: Any, env: dict[str, str]) -> tuple[ModelStore, list[str]]:
    """A store whose own S3 GETs are counted."""
    endpoint, _ = server
    calls: list[str] = []

    def factory() -> Any:
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
        )
        client.meta.events.register(
            "before-parameter-build.s3.GetObject", lambda params, **_: calls.append(params["Key"])
        )
        return client

    return ModelStore(load_settings(env), s3_client_factory=factory), calls


@pytest.mark.parametrize("model", ["digits", "minilm"])  # minilm's model arrives as parallel ranged GETs
def test_the_store_loads_from_the_prefetched_bytes_without_a_get_of_its_own(server, model):
    env = _environment(server, model)
    assert prefetch.start(env) is not None
    store, calls = _store(server, env)
    loaded = store.get_model()
    assert loaded.manifest.name == model
    assert calls == []
    assert prefetch.take(store.settings.manifest_key) is None  # each object is handed out once


def test_a_prefetched_file_that_does_not_match_the_manifest_is_never_served(server):
    env = _environment(server, "digits", "models/digits/tampered/")
    _, s3 = server
    s3.put_object(Bucket=BUCKET, Key="models/digits/tampered/model.onnx", Body=b"not the model")
    prefetch.start(env)
    store, calls = _store(server, env)
    with pytest.raises(ModelUnavailable, match="sha256"):
        store.get_model()
    assert calls == []  # the bytes came from the prefetch, and the store's own check refused them


def test_a_manifest_that_is_not_the_pinned_one_is_dropped_and_the_store_reports_it(server):
    env = _environment(server, "digits", MANIFEST_SHA256="0" * 64)
    prefetch.start(env)
    store, calls = _store(server, env)
    with pytest.raises(ModelUnavailable, match="does not match the pinned"):
        store.get_model()
    assert calls == [store.settings.manifest_key]  # nothing prefetched: the store fetched and checked it


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"LOAD_MODE": "lazy"}, "the model loads on the first request"),
        ({"_HANDLER": ""}, "not a Lambda execution environment"),
        ({"AWS_ACCESS_KEY_ID": ""}, "no credentials in the environment (SnapStart: boto3 fetches them)"),
        ({"MODEL_NAME": ""}, "a setting the store will report"),
    ],
)
def test_nothing_starts_when_it_should_not(server, change, why):
    env = {**_environment(server, "digits"), **change}
    assert prefetch.start(env) is None, why


def test_an_unreachable_s3_leaves_the_store_to_fetch_and_retry(server):
    env = {**_environment(server, "digits"), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens there
    prefetch.start(env)
    store, calls = _store(server, env)  # the store's own client reaches the real endpoint
    assert store.get_model().manifest.name == "digits"
    assert len(calls) == 2

"""One OpenAPI document for the whole API, from the catalog the stack uploads (contract/catalog.py)."""

from __future__ import annotations

import json
import uuid

import pytest

from contract.catalog import decode, encode
from contract.manifest import ManifestError
from handlers.api import app
from handlers.runtime import openapi
from handlers.runtime.openapi_models import SERVER_TAG, SIGNED, SIGV4
from tests.infra.conftest import ROOT


def _manifest(name: str) -> dict:
    return json.loads((ROOT / "model_artifacts" / name / "manifest.json").read_text())


def _catalog(digits_auth: str = "api_key", minilm_auth: str = "iam"):
    data = encode([("digits", digits_auth, _manifest("digits")), ("minilm", minilm_auth, _manifest("minilm"))])
    return data, decode(data)


def _document(**kwargs) -> dict:
    return json.loads(openapi.document(app, "prod", **kwargs))


def test_the_catalog_holds_each_models_auth_and_manifest_in_order():
    data, entries = _catalog()
    assert [(e.name, e.auth) for e in entries] == [("digits", "api_key"), ("minilm", "iam")]
    assert entries[1].manifest.inputs[0].name == "text"
    assert _catalog()[0] == data  # the same models, the same bytes


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not JSON"),
        (b'{"schema_version": 2, "models": []}', "schema_version 1"),
        (b'{"schema_version": 1, "models": []}', "at least one model"),
        (b'{"schema_version": 1, "models": [{"name": "x", "auth": "cognito", "manifest": {}}]}', "auth"),
    ],
)
def test_a_bad_catalog_says_what_is_wrong(data, message):
    with pytest.raises(ManifestError, match=message):
        decode(data)


def test_a_catalog_entry_must_hold_its_own_models_manifest():
    data = encode([("other", "api_key", _manifest("digits"))])
    with pytest.raises(ManifestError, match="the manifest is of 'digits', not 'other'"):
        decode(data)


def test_every_models_routes_are_written_out_with_its_tag():
    _, entries = _catalog()
    doc = _document(catalog=entries)
    assert not [path for path in doc["paths"] if "{model}" in path]
    for model in ("digits", "minilm"):
        for path in (f"/v2/models/{model}/infer", f"/v2/models/{model}", f"/v1/models/{model}:predict"):
            assert path in doc["paths"], path
            assert all(op["tags"] == [model] for op in doc["paths"][path].values())
    assert all(op["tags"] == [SERVER_TAG] for op in doc["paths"]["/v2/health/ready"].values())
    assert [t["name"] for t in doc["tags"]] == ["digits", "minilm", SERVER_TAG]
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values() if "operationId" in op]
    assert len(ids) == len(set(ids))  # operation ids stay unique
    version = next(
        p
        for p in doc["paths"]["/v2/models/digits/versions/{version}/infer"]["post"]["parameters"]
        if p["name"] == "version"
    )
    assert version["schema"]["enum"] == [_manifest("digits")["version"]]


def test_each_model_has_its_own_schema_example_and_auth():
    _, entries = _catalog()
    doc = _document(catalog=entries)
    assert doc["security"] == [{"apiKey": []}]  # digits takes the key
    digits = doc["paths"]["/v2/models/digits/infer"]["post"]
    body = digits["requestBody"]["content"]["application/json"]
    (tensor,) = body["example"]["inputs"]
    assert (tensor["name"], tensor["shape"], tensor["datatype"], len(tensor["data"])) == ("pixels", [1, 64], "FP32", 64)
    names = body["schema"]["properties"]["inputs"]["items"]["properties"]["name"]["enum"]
    assert names == ["pixels"] and "security" not in digits
    minilm = doc["paths"]["/v2/models/minilm/infer"]["post"]
    assert minilm["security"] == [{"sigv4": []}] and SIGNED in minilm["description"]  # signed, not keyed
    assert doc["components"]["securitySchemes"]["sigv4"] == SIGV4
    assert "security" not in doc["paths"]["/v2/health/ready"]["get"]  # digits, the first model, takes the key
    (text,) = minilm["requestBody"]["content"]["application/json"]["example"]["inputs"]
    assert text == {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello world"]}
    predict = doc["paths"]["/v1/models/minilm:predict"]["post"]["requestBody"]["content"]["application/json"]
    assert predict["example"] == {"instances": ["hello world"]}
    digits_predict = doc["paths"]["/v1/models/digits:predict"]["post"]["requestBody"]["content"]["application/json"]
    assert digits_predict["example"] == {"instances": [[0.0] * 64]}


def test_all_models_signed_declare_no_key():
    _, entries = _catalog("iam", "iam")
    doc = _document(catalog=entries)
    assert "security" not in doc and set(doc["components"]["securitySchemes"]) == {"sigv4"}
    assert doc["paths"]["/v2/models/minilm/infer"]["post"]["security"] == [{"sigv4": []}]
    assert "Signature Version 4" in doc["info"]["description"]


def test_server_routes_take_the_first_models_auth():
    """/v2 and /v2/health/* go to the first model's function: signed when it is, keyed otherwise."""
    _, entries = _catalog("iam", "api_key")
    doc = _document(catalog=entries)
    assert doc["security"] == [{"apiKey": []}]  # minilm takes the key
    for path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        assert doc["paths"][path]["get"]["security"] == [{"sigv4": []}], path
    assert "except to the models whose routes say they are signed" in doc["info"]["description"]


def test_an_image_model_gets_no_text_for_an_example():
    manifest = _manifest("digits")
    image = {**manifest, "name": "photos", "pipeline": {"kind": "image-classification", "size": [8, 8]}}
    image["inputs"] = [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    doc = _document(catalog=decode(encode([("photos", "api_key", image)])))
    body = doc["paths"]["/v2/models/photos/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert "example" not in body and body["schema"]["properties"]["inputs"]


def test_without_a_catalog_the_document_is_the_one_models():
    doc = _document(auth="api_key", model="digits")
    assert "/v2/models/{model}/infer" in doc["paths"]


def test_the_swagger_page_embeds_the_whole_document():
    _, entries = _catalog()
    kind, page = openapi.swagger(app, "prod", want_json=False, catalog=entries)
    assert kind == "text/html" and "/v2/models/minilm/infer" in page and "/v2/models/digits/infer" in page


@pytest.fixture
def bucket(monkeypatch):
    """A bucket in moto's in-process S3, and a ModelStore factory reading the catalog from it."""
    import boto3
    from moto import mock_aws

    from contract.catalog import CATALOG_KEY
    from handlers.runtime.model_store import ModelStore
    from handlers.runtime.settings import load_settings

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    name = f"models-{uuid.uuid4().hex[:12]}"  # moto's in-process backends are shared within the run
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=name)
        settings = load_settings({"MODEL_NAME": "digits", "MODEL_BUCKET": name, "CATALOG_KEY": CATALOG_KEY})

        def store() -> ModelStore:
            return ModelStore(settings, s3_client_factory=lambda: boto3.client("s3", region_name="us-east-1"))

        yield s3, name, store


def test_the_store_reads_the_catalog_on_each_call(bucket):
    from contract.catalog import CATALOG_KEY

    s3, name, store = bucket
    data, _ = _catalog()
    s3.put_object(Bucket=name, Key=CATALOG_KEY, Body=data)
    reader = store()
    assert [e.name for e in reader.catalog() or ()] == ["digits", "minilm"]
    fewer = encode([("digits", "api_key", _manifest("digits"))])  # a deploy removed minilm
    s3.put_object(Bucket=name, Key=CATALOG_KEY, Body=fewer)
    assert [e.name for e in reader.catalog() or ()] == ["digits"]


def test_an_unreadable_catalog_documents_this_model_alone(bucket):
    from contract.catalog import CATALOG_KEY

    s3, name, store = bucket
    assert store().catalog() is None  # no such key
    s3.put_object(Bucket=name, Key=CATALOG_KEY, Body=b"not json")
    assert store().catalog() is None  # unparsable
    doc = _document(auth="api_key", model="digits", catalog=None)
    assert "/v2/models/{model}/infer" in doc["paths"]

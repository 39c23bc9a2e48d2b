"""One OpenAPI document for the whole API, from the catalog the stack uploads (contract/catalog.py)."""

from __future__ import annotations

import json

import pytest

from contract.catalog import CATALOG_PREFIX, decode, encode
from contract.manifest import ManifestError
from handlers.api import app
from handlers.runtime import openapi
from handlers.runtime.openapi_models import SERVER_TAG, SIGNED
from tests.infra.conftest import ROOT


def _manifest(name: str) -> dict:
    return json.loads((ROOT / "model_artifacts" / name / "manifest.json").read_text())


def _catalog(digits_auth: str = "api_key", minilm_auth: str = "iam"):
    key, data = encode([("digits", digits_auth, _manifest("digits")), ("minilm", minilm_auth, _manifest("minilm"))])
    return key, data, decode(data)


def _document(**kwargs) -> dict:
    return json.loads(openapi.document(app, "prod", **kwargs))


def test_the_catalog_key_names_its_content():
    key, data, entries = _catalog()
    assert key.startswith(CATALOG_PREFIX) and key.endswith(".json")
    assert [(e.name, e.auth) for e in entries] == [("digits", "api_key"), ("minilm", "iam")]
    assert encode([("digits", "api_key", _manifest("digits"))])[0] != key  # another content, another key
    assert _catalog()[0] == key  # the same content, the same key


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
    _, data = encode([("other", "api_key", _manifest("digits"))])
    with pytest.raises(ManifestError, match="the manifest is of 'digits', not 'other'"):
        decode(data)


def test_every_models_routes_are_written_out_with_its_tag():
    _, _, entries = _catalog()
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
    _, _, entries = _catalog()
    doc = _document(catalog=entries)
    assert doc["security"] == [{"apiKey": []}]  # digits takes the key
    digits = doc["paths"]["/v2/models/digits/infer"]["post"]
    body = digits["requestBody"]["content"]["application/json"]
    (tensor,) = body["example"]["inputs"]
    assert (tensor["name"], tensor["shape"], tensor["datatype"], len(tensor["data"])) == ("pixels", [1, 64], "FP32", 64)
    names = body["schema"]["properties"]["inputs"]["items"]["properties"]["name"]["enum"]
    assert names == ["pixels"] and "security" not in digits
    minilm = doc["paths"]["/v2/models/minilm/infer"]["post"]
    assert minilm["security"] == [] and SIGNED in minilm["description"]  # signed, not keyed
    (text,) = minilm["requestBody"]["content"]["application/json"]["example"]["inputs"]
    assert text == {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello world"]}
    predict = doc["paths"]["/v1/models/minilm:predict"]["post"]["requestBody"]["content"]["application/json"]
    assert predict["example"] == {"instances": ["hello world"]}
    digits_predict = doc["paths"]["/v1/models/digits:predict"]["post"]["requestBody"]["content"]["application/json"]
    assert digits_predict["example"] == {"instances": [[0.0] * 64]}


def test_all_models_signed_declare_no_key():
    _, _, entries = _catalog("iam", "iam")
    doc = _document(catalog=entries)
    assert "security" not in doc and "securitySchemes" not in doc.get("components", {})
    assert "security" not in doc["paths"]["/v2/models/minilm/infer"]["post"]


def test_without_a_catalog_the_document_is_the_one_models():
    doc = _document(auth="api_key", model="digits")
    assert "/v2/models/{model}/infer" in doc["paths"]


def test_the_swagger_page_embeds_the_whole_document():
    _, _, entries = _catalog()
    kind, page = openapi.swagger(app, "prod", want_json=False, catalog=entries)
    assert kind == "text/html" and "/v2/models/minilm/infer" in page and "/v2/models/digits/infer" in page

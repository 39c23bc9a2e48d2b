"""The OpenAPI document declares how callers authenticate, so Swagger UI's "Authorize" sends the key."""

from __future__ import annotations

import json

import pytest

from handlers.api import app
from handlers.runtime import openapi

INFER = "/v2/models/{model}/infer"


def _document(**kwargs) -> dict:
    return json.loads(openapi.document(app, "prod", **kwargs))


def test_api_key_mode_declares_the_header_for_every_operation():
    doc = _document(auth="api_key")
    assert doc["components"]["securitySchemes"] == {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}
    assert doc["security"] == [{"apiKey": []}]
    assert "`x-api-key` header" in doc["info"]["description"]
    assert INFER in doc["paths"] and doc["servers"] == [{"url": "/prod"}]
    # no operation opts out of the global requirement
    assert all("security" not in op for ops in doc["paths"].values() for op in ops.values())


def test_iam_mode_declares_no_scheme_and_says_requests_are_signed():
    doc = _document(auth="iam")
    assert "security" not in doc
    assert "securitySchemes" not in doc.get("components", {})
    assert "Signature Version 4" in doc["info"]["description"]
    assert INFER in doc["paths"]


@pytest.mark.parametrize(("value", "scheme"), [("api_key", True), ("iam", False), ("", True)])
def test_mode_comes_from_api_auth_in_the_environment(monkeypatch, value, scheme):
    monkeypatch.setenv("API_AUTH", value)
    doc = _document()
    assert ("security" in doc) is scheme
    page_type, page = openapi.swagger(app, "prod", want_json=False)
    assert page_type == "text/html" and ('"name": "x-api-key"' in page) is scheme  # the embedded document


def test_unknown_mode_names_the_variable(monkeypatch):
    monkeypatch.setenv("API_AUTH", "cognito")
    with pytest.raises(ValueError, match="API_AUTH: expected one of api_key, iam, got 'cognito'"):
        openapi.document(app, "prod")

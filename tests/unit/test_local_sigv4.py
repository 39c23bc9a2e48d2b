"""The local gateway's SigV4 check against botocore's signer."""

from __future__ import annotations

import datetime

from onnxfn.local.sigv4 import sign, verify

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "onnxfn-local", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token"}
URL = "http://127.0.0.1:8080/prod/v2/models/digits/infer?x=1"
BODY = b'{"inputs": []}'


def _signed(**changes):
    headers = sign("POST", URL, {"Content-Type": "application/json"}, BODY, CREDENTIALS, "us-east-1")
    lowered = {k.lower(): v for k, v in headers.items()}
    lowered.setdefault("host", "127.0.0.1:8080")
    lowered.update(changes)
    return lowered


def test_a_request_botocore_signed_verifies():
    assert verify("POST", URL, _signed(), BODY, CREDENTIALS, "us-east-1") is None


def test_any_change_to_what_was_signed_is_refused():
    headers = _signed()
    assert "does not match" in verify("POST", URL, headers, b'{"inputs": [1]}', CREDENTIALS, "us-east-1")
    assert "does not match" in verify("PUT", URL, headers, BODY, CREDENTIALS, "us-east-1")
    assert "does not match" in verify("POST", URL.replace("x=1", "x=2"), headers, BODY, CREDENTIALS, "us-east-1")
    tampered = _signed(**{"x-amz-security-token": "other"})
    assert "does not match" in verify("POST", URL, tampered, BODY, CREDENTIALS, "us-east-1")


def test_other_credentials_regions_and_old_signatures_are_refused():
    other = {**CREDENTIALS, "AWS_ACCESS_KEY_ID": "AKIAOTHER"}
    assert "security token" in verify("POST", URL, _signed(), BODY, other, "us-east-1")
    assert "region" in verify("POST", URL, _signed(), BODY, CREDENTIALS, "eu-west-1")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=6)
    assert "expired" in verify("POST", URL, _signed(), BODY, CREDENTIALS, "us-east-1", now=later)
    assert "Credential" in verify(
        "POST", URL, {"authorization": "AWS4-HMAC-SHA256 nonsense"}, BODY, CREDENTIALS, "us-east-1"
    )


def test_a_declared_payload_hash_must_be_the_bodys():
    unsigned = _signed(**{"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    assert "x-amz-content-sha256" in verify("POST", URL, unsigned, BODY, CREDENTIALS, "us-east-1")

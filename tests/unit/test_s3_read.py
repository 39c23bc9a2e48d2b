"""The standard-library S3 reader: its signature is AWS's and botocore's, and it reads through moto."""

from __future__ import annotations

import datetime
import threading
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.server import ThreadedMotoServer

from handlers.runtime import retries
from handlers.runtime.s3_read import EMPTY_SHA256, S3Reader, S3ReadError, from_environment, sign

# AWS's documented example: "GET Object" in the Signature Version 4 header-based authentication
# examples of the S3 API reference (examplebucket, test.txt, Range bytes=0-9, 2013-05-24).
AWS_EXAMPLE = {
    "access_key": "AKIAIOSFODNN7EXAMPLE",
    "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "signature": "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
}


def test_signature_matches_aws_published_example():
    authorization = sign(
        "GET",
        "examplebucket.s3.amazonaws.com",
        "/test.txt",
        {},
        {"range": "bytes=0-9", "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": "20130524T000000Z"},
        access_key=AWS_EXAMPLE["access_key"],
        secret_key=AWS_EXAMPLE["secret_key"],
        region="us-east-1",
        amz_date="20130524T000000Z",
    )
    assert authorization == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=" + AWS_EXAMPLE["signature"]
    )


@pytest.mark.parametrize(
    ("key", "version", "token"),
    [
        ("models/digits/1-abc/model.onnx", None, None),
        (
            "models/a b/ü+plus=eq&amp;~tilde.onnx",
            "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
            "tok/en+=",
        ),
    ],
)
def test_signature_matches_botocore(key, version, token, monkeypatch):
    """The same request signed by botocore's S3 SigV4 signer (the reference implementation)."""
    when = datetime.datetime(2026, 12, 1, 12, 30, 45, tzinfo=datetime.UTC)
    reader = S3Reader("eu-west-1", "AKIDEXAMPLE", "secret/key+", token)
    host, path, _ = reader._address("onnxfn-models-1234", key)
    headers = {"x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": when.strftime("%Y%m%dT%H%M%SZ")}
    headers["range"] = "bytes=0-8388607"
    if token:
        headers["x-amz-security-token"] = token
    query = {"versionId": version} if version else {}
    ours = sign(
        "GET",
        host,
        path,
        query,
        headers,
        access_key="AKIDEXAMPLE",
        secret_key="secret/key+",
        region="eu-west-1",
        amz_date=headers["x-amz-date"],
    )

    class Frozen(datetime.datetime):
        @classmethod
        def utcnow(cls) -> Any:
            return when.replace(tzinfo=None)

        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return when if tz else when.replace(tzinfo=None)

    monkeypatch.setattr("botocore.auth.datetime.datetime", Frozen)
    url = f"https://{host}{path}" + (f"?versionId={quote(version, safe='-_.~')}" if version else "")
    request = AWSRequest("GET", url, headers={"Range": headers["range"], "X-Amz-Content-SHA256": EMPTY_SHA256})
    S3SigV4Auth(Credentials("AKIDEXAMPLE", "secret/key+", token), "s3", "eu-west-1").add_auth(request)
    assert request.headers["X-Amz-Date"] == headers["x-amz-date"]
    assert ours == request.headers["Authorization"]


@pytest.fixture(scope="module")
def moto_s3():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="t"
    )
    client.create_bucket(Bucket="models")
    client.put_bucket_versioning(Bucket="models", VersioningConfiguration={"Status": "Enabled"})
    yield endpoint, client
    server.stop()


def test_reads_whole_ranged_and_versioned_objects_through_moto(moto_s3):
    endpoint, client = moto_s3
    first = client.put_object(Bucket="models", Key="m/a b+c.bin", Body=bytes(range(256)) * 100)["VersionId"]
    client.put_object(Bucket="models", Key="m/a b+c.bin", Body=b"second version")
    reader = from_environment(
        {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "t", "AWS_REGION": "us-east-1",
         "AWS_SESSION_TOKEN": "tok", "AWS_ENDPOINT_URL": endpoint}
    )  # fmt: skip
    assert reader is not None
    assert reader.get_object(Bucket="models", Key="m/a b+c.bin")["Body"].read() == b"second version"
    old = reader.get_object(Bucket="models", Key="m/a b+c.bin", VersionId=first)["Body"].read()
    assert old == bytes(range(256)) * 100
    part = reader.get_object(Bucket="models", Key="m/a b+c.bin", VersionId=first, Range="bytes=256-511")
    assert part["Body"].read() == bytes(range(256))
    results: list[bytes] = []  # one connection per thread, as the ranged GETs use it
    threads = [
        threading.Thread(target=lambda: results.append(reader.get_object(Bucket="models", Key="m/a b+c.bin")["Body"].read()))
        for _ in range(4)
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [b"second version"] * 4


def test_errors_carry_s3s_code_and_only_transient_ones_are_retried(moto_s3):
    endpoint, _ = moto_s3
    reader = S3Reader("us-east-1", "testing", "t", endpoint=endpoint)
    with pytest.raises(S3ReadError) as missing:
        reader.get_object(Bucket="models", Key="nothing-here")
    assert (missing.value.status, missing.value.code) == (404, "NoSuchKey")
    assert not retries.retryable(missing.value)
    assert retries.retryable(S3ReadError(503, "SlowDown", "k"))
    assert retries.retryable(ConnectionRefusedError())
    closed = S3Reader("us-east-1", "testing", "t", endpoint="http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(OSError):
        closed.get_object(Bucket="models", Key="k")


def test_no_reader_without_credentials_in_the_environment():
    assert from_environment({"AWS_REGION": "us-east-1"}) is None  # SnapStart: boto3 fetches credentials
    assert from_environment({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}) is None  # no region

"""Signed S3 GETs with the standard library: the model fetch without boto3 on the cold path.

Importing boto3 and creating an S3 client costs about 220 ms of a cold start measured faithfully
here (python3.12, the built layer with bytecode: ``import boto3`` 160 ms, the client 60 ms), more
than reading the model. The model store needs one operation, a GetObject (whole or by range, maybe
of a pinned version), so this module signs that request with Signature Version 4 (hmac and hashlib)
and sends it with ``http.client``. It is used when the function's credentials are in its
environment, as Lambda provides them to on-demand and provisioned environments; otherwise (SnapStart
serves credentials from a local endpoint) the model store uses boto3. Every other AWS call goes
through boto3. The signer is tested against AWS's published example and against botocore's.

The object it returns mimics the part of boto3's ``get_object`` response the store reads
(``["Body"].read()``), so a boto3 client can stand in for it.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import io
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Objects larger than this are read as parallel ranged GETs of this size, at most 8 at a time.
PART_BYTES = 8 * 1024 * 1024
MAX_PARALLEL_PARTS = 8
_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class S3ReadError(Exception):
    """S3 answered with an error status; ``code`` is S3's error code (``NoSuchKey``, ``SlowDown``)."""

    def __init__(self, status: int, code: str, key: str) -> None:
        super().__init__(f"S3 GetObject {key!r}: HTTP {status} {code}")
        self.status = status
        self.code = code


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str = "s3") -> bytes:
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), date)
    return _hmac(_hmac(_hmac(key, region), service), "aws4_request")


def sign(
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    *,
    access_key: str,
    secret_key: str,
    region: str,
    amz_date: str,
) -> str:
    """The Authorization header of an S3 request; ``headers`` (lower-case names) are all signed.

    ``path`` is the canonical (already URI-encoded) path; ``headers`` must hold ``x-amz-date`` and
    ``x-amz-content-sha256``; ``host`` is added here.
    """
    signed = {"host": host, **{name.lower(): value.strip() for name, value in headers.items()}}
    names = sorted(signed)
    canonical_query = "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}" for name, value in sorted(query.items())
    )
    canonical = "\n".join(
        [
            method,
            path,
            canonical_query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            signed["x-amz-content-sha256"],
        ]
    )
    date = amz_date[:8]
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(signing_key(secret_key, date, region), to_sign.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"


class S3Reader:
    """GetObject for one region and set of credentials; a keep-alive connection per thread."""

    def __init__(
        self,
        region: str,
        access_key: str,
        secret_key: str,
        session_token: str | None = None,
        endpoint: str | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 20.0,
    ) -> None:
        self.region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._token = session_token
        self._endpoint = urlsplit(endpoint) if endpoint else None
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._local = threading.local()

    def _address(self, bucket: str, key: str) -> tuple[str, str, bool]:
        """(host, canonical path, https): virtual-hosted on AWS, path-style on a custom endpoint."""
        encoded = quote(key, safe="/~")
        if self._endpoint is not None:
            return self._endpoint.netloc, f"/{bucket}/{encoded}", self._endpoint.scheme == "https"
        if _DNS_BUCKET.match(bucket) and "." not in bucket:
            return f"{bucket}.s3.{self.region}.amazonaws.com", f"/{encoded}", True
        return f"s3.{self.region}.amazonaws.com", f"/{bucket}/{encoded}", True

    def _connection(self, host: str, https: bool) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None or connection.host != host.split(":", maxsplit=1)[0]:
            kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
            connection = kind(host, timeout=self._connect_timeout_s)
            self._local.connection = connection
        return connection

    def get_object(  # boto3's argument names, so either client serves the model store
        self, *, Bucket: str, Key: str, VersionId: str | None = None, Range: str | None = None
    ) -> Any:
        """The object's bytes as ``{"Body": <readable>}``; S3ReadError on an error status."""
        host, path, https = self._address(Bucket, Key)
        query = {"versionId": VersionId} if VersionId else {}
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        headers = {"x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
        if Range:
            headers["range"] = Range
        if self._token:
            headers["x-amz-security-token"] = self._token
        authorization = sign(
            "GET",
            host,
            path,
            query,
            headers,
            access_key=self._access_key,
            secret_key=self._secret_key,
            region=self.region,
            amz_date=amz_date,
        )
        target = path + ("?" + "&".join(f"{k}={quote(v, safe='-_.~')}" for k, v in query.items()) if query else "")
        connection = self._connection(host, https)
        try:
            connection.request("GET", target, headers={**headers, "Authorization": authorization})
            if connection.sock is not None:
                connection.sock.settimeout(self._read_timeout_s)
            response = connection.getresponse()
            body = response.read()
        except BaseException:
            connection.close()  # a broken connection is never reused
            self._local.connection = None
            raise
        if response.status not in (200, 206):
            match = _CODE.search(body)
            raise S3ReadError(response.status, match.group(1).decode() if match else response.reason, Key)
        return {"Body": io.BytesIO(body), "ContentLength": len(body)}


def read_ranges(
    client: Any,
    bucket: str,
    key: str,
    size: int,
    part_bytes: int,
    max_parallel: int,
    call: Callable[[Callable[[], bytes]], bytes] = lambda fetch: fetch(),
) -> bytes:
    """``key`` (``size`` bytes) as parallel ranged GETs of ``part_bytes``, joined in order.

    One S3 stream moves roughly 50-100 MB/s, so a 40 MB model takes ~0.5 s alone; ranges overlap
    their latency. ``call`` runs each part's GET (the model store wraps it in its retries).
    """
    from concurrent.futures import ThreadPoolExecutor

    bounds = [(start, min(start + part_bytes, size) - 1) for start in range(0, size, part_bytes)]

    def part(bound: tuple[int, int]) -> bytes:
        def fetch() -> bytes:
            data: bytes = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={bound[0]}-{bound[1]}")["Body"].read()
            return data

        return call(fetch)

    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(bounds)))) as pool:
        return b"".join(pool.map(part, bounds))


def from_environment(env: Mapping[str, str] | None = None) -> S3Reader | None:
    """A reader with the credentials Lambda puts in the environment, or None when they are not there."""
    env = os.environ if env is None else env
    access_key, secret_key = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not (access_key and secret_key and region):
        return None
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    return S3Reader(region, access_key, secret_key, env.get("AWS_SESSION_TOKEN") or None, endpoint)

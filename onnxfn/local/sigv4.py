"""SigV4 for the API's IAM routes under ``onnxfn serve``: the local gateway knows the only credentials
that exist here (``LOCAL_CREDENTIALS``), so it checks a signature as API Gateway would, with
botocore's signer recomputing it from the request as received."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Mapping

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE = "execute-api"
MAX_SKEW = datetime.timedelta(minutes=5)  # API Gateway's: "Signature expired: ... (- 5 min.)"
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


def verify(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    credentials: Mapping[str, str],
    region: str,
    now: datetime.datetime | None = None,
) -> str | None:
    """None when the request carries a valid SigV4 signature of ``credentials``; otherwise why not
    (API Gateway's wording). ``headers`` are lower-cased; ``url`` is the URL as the client sent it."""
    match = _AUTHORIZATION.match(headers.get("authorization", "").strip())
    if match is None:
        return "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' (AWS4-HMAC-SHA256)"
    if match["key"] != credentials["AWS_ACCESS_KEY_ID"]:
        return "The security token included in the request is invalid."
    if match["service"] != SERVICE or match["region"] != region:
        return f"Credential should be scoped to a valid region and service ({region}/{SERVICE})"
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return "Authorization requires an X-Amz-Date header (YYYYMMDD'T'HHMMSS'Z')"
    now = now or datetime.datetime.now(datetime.UTC)
    if abs(now - signed_at) > MAX_SKEW:
        return f"Signature expired: {amz_date} is more than 5 minutes from the server's time"
    signed = match["signed"].split(";")
    missing = [name for name in signed if name not in headers]
    if missing or "host" not in signed:
        return f"The request signature covers headers it does not carry ({', '.join(missing) or 'host'})"
    declared = headers.get("x-amz-content-sha256")
    if declared is not None and declared != hashlib.sha256(body or b"").hexdigest():
        # botocore would sign the declared hash as given (UNSIGNED-PAYLOAD too): the body must match it
        return "The request's x-amz-content-sha256 does not match its body."
    request = AWSRequest(method=method, url=url, data=body or b"", headers={name: headers[name] for name in signed})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(credentials["AWS_ACCESS_KEY_ID"], credentials["AWS_SECRET_ACCESS_KEY"]), SERVICE, region
    )
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, match["signature"]):
        return (
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return None


def sign(
    method: str, url: str, headers: Mapping[str, str], body: bytes | None, credentials: Mapping[str, str], region: str
) -> dict[str, str]:
    """``headers`` with SigV4 for ``execute-api`` added, as an AWS SDK signs a call to an IAM route."""
    request = AWSRequest(method=method, url=url, data=body or b"", headers=dict(headers))
    token = credentials.get("AWS_SESSION_TOKEN")
    SigV4Auth(
        Credentials(credentials["AWS_ACCESS_KEY_ID"], credentials["AWS_SECRET_ACCESS_KEY"], token), SERVICE, region
    ).add_auth(request)
    return dict(request.headers.items())

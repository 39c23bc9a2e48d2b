"""The API end to end under bad input, through the real handler (API Gateway events, moto S3): every
answer is below 500, and every 4xx is a JSON ``{"error": "..."}`` saying what was wrong."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from onnxfn.local.events import api_gateway_event
from tests.fuzz.strategies import (
    MANIFESTS,
    count_outcome,
    default_recursion_limit,
    dumps,
    header_lengths,
    infer_documents,
    json_values,
    valid_tensor,
)
from tests.fuzz.test_oip_codec import binary_requests
from tests.fuzz.test_v1_codec import predict_documents

ROUTES = {
    "digits": ["/v2/models/digits/infer", "/v1/models/digits:predict", "/v2/models/digits/versions/1/infer"],
    "minilm": ["/v2/models/minilm/infer", "/v1/models/minilm:predict"],
}
content_types = st.sampled_from(["application/json", "application/octet-stream", "text/plain", "", "*/*"])


def assert_answered(reply: Any) -> None:
    count_outcome(f"status {reply.status}")
    assert reply.status < 500, (reply.status, reply.body[:300])
    if reply.status >= 400:
        document = reply.json()
        assert set(document) == {"error"}, document
        assert isinstance(document["error"], str) and document["error"].strip()
        assert len(document["error"]) <= 500 and "Traceback" not in document["error"]


@st.composite
def requests(draw: st.DrawFn, model: str) -> tuple[str, bytes, dict[str, str]]:
    manifest = MANIFESTS[model]
    path = draw(st.sampled_from(ROUTES[model]))
    headers = {"Content-Type": draw(content_types)}
    kind = draw(st.sampled_from(["valid", "oip", "binary", "v1", "raw"]))
    if kind == "valid":  # so that the answers fuzzed include successes
        body = dumps({"inputs": [draw(valid_tensor(spec)) for spec in manifest.inputs]})
    elif kind == "oip":
        body = dumps(draw(infer_documents(manifest)))
    elif kind == "binary":
        body, length = draw(binary_requests(manifest))
        if length is not None:
            headers["Inference-Header-Content-Length"] = length
    elif kind == "v1":
        body = dumps(draw(predict_documents(model)))
    else:
        body = draw(st.one_of(st.binary(max_size=300), json_values.map(dumps)))
        length = draw(header_lengths)
        if length is not None:
            headers["Inference-Header-Content-Length"] = length
    if draw(st.integers(0, 9)) == 5:  # one request in ten (hypothesis favours the ends of a range)
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "identity", "br", ""]))
        body = gzip.compress(body) if headers["Content-Encoding"] == "gzip" else body
    return path, body, headers


@pytest.fixture(params=sorted(ROUTES))
def served(request: pytest.FixtureRequest, serve: Any) -> Any:
    """One served model for all the examples of a test (they only read through it)."""
    return serve(request.param)


@given(data=st.data())
def test_every_answer_is_below_500_and_every_4xx_is_a_json_error(served: Any, data: st.DataObject) -> None:
    path, body, headers = data.draw(requests(served.name))
    with default_recursion_limit():
        reply = served.client.post(path, body, headers)
    assert_answered(reply)


@given(body=st.text(max_size=200), encoded=st.booleans(), length=header_lengths)
@example(body="\ud800", encoded=False, length=None)  # a lone surrogate escaped in the event's JSON
@example(body="e30=\n", encoded=True, length=None)
@example(body="é", encoded=True, length=None)
def test_any_proxy_event_body_is_answered(served: Any, body: str, encoded: bool, length: str | None) -> None:
    """The event as API Gateway might hand it over: any text, flagged base64 or not."""
    path = ROUTES[served.name][0]
    event = api_gateway_event("POST", path, "{}", {"Content-Type": "application/json"})
    event["body"], event["isBase64Encoded"] = body, encoded
    if length is not None:
        event["headers"]["Inference-Header-Content-Length"] = length
    with default_recursion_limit():
        reply = served.client.call("POST", path, event=event)
    assert_answered(reply)


def test_a_gzip_body_is_refused_with_415_not_inflated(serve: Any) -> None:
    served = serve("digits")
    body = gzip.compress(dumps({"instances": [[0.0] * 64]}))
    reply = served.client.post("/v1/models/digits:predict", body, {"Content-Encoding": "gzip"})
    assert reply.status == 415
    assert "Content-Encoding 'gzip' is not supported; send the body uncompressed" in reply.json()["error"]
    assert served.client.post("/v1/models/digits:predict", gzip.decompress(body)).status == 200

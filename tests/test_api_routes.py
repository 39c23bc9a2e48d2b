"""Every route of the API handler, through API Gateway REST proxy events, for both demo models."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.conftest import artifact
from tests.reference import digits_direct, minilm_direct

PIXELS = load_digits().data[:5].astype(np.float32)
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Lambda functions scale to zero.", "ONNX"]


def _infer_body(name: str) -> dict:
    if name == "digits":
        return {
            "id": "req-7",
            "inputs": [{"name": "pixels", "shape": [5, 64], "datatype": "FP32", "data": PIXELS.tolist()}],
        }
    return {"id": "req-7", "inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": SENTENCES}]}


@pytest.mark.parametrize("name", ["digits", "minilm"])
def test_server_and_health_routes(serve, name):
    served = serve(name)
    client = served.client
    meta = client.get("/v2")
    assert meta.status == 200
    assert meta.json()["name"] == "onnxfn"
    assert "binary_tensor_data" in meta.json()["extensions"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert served.get_calls == []  # liveness touches nothing
    ready = client.get("/v2/health/ready")
    assert ready.status == 200 and ready.json() == {"ready": True}
    assert served.store.ready


@pytest.mark.parametrize("name", ["digits", "minilm"])
def test_model_metadata_and_readiness(serve, name):
    served = serve(name)
    client = served.client
    manifest = json.loads((artifact(name) / "manifest.json").read_text())
    for path in (f"/v2/models/{name}", f"/v2/models/{name}/versions/1"):
        reply = client.get(path)
        assert reply.status == 200, reply.body
        doc = reply.json()
        assert doc["name"] == name and doc["versions"] == ["1"]
        assert doc["inputs"] == manifest["inputs"] and doc["outputs"] == manifest["outputs"]
    assert served.store.ready is False  # metadata needs the manifest only
    assert client.get(f"/v2/models/{name}/versions/9").status == 404
    assert client.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}
    assert client.get(f"/v2/models/{name}/versions/1/ready").status == 200
    assert client.get("/v2/models/other/ready").status == 404
    status = client.get(f"/v1/models/{name}").json()
    assert status["model_version_status"][0] == {
        "version": "1",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }


def test_digits_infer_matches_onnxruntime(serve):
    client = serve("digits").client
    labels, probabilities = digits_direct(artifact("digits"), PIXELS)
    for path in ("/v2/models/digits/infer", "/v2/models/digits/versions/1/infer"):
        reply = client.post(path, _infer_body("digits"))
        assert reply.status == 200, reply.body
        doc = reply.json()
        assert doc["id"] == "req-7" and doc["model_name"] == "digits" and doc["model_version"] == "1"
        out = {o["name"]: o for o in doc["outputs"]}
        assert out["label"]["data"] == labels.tolist()
        assert out["label_name"]["data"] == [str(x) for x in labels]
        assert out["probabilities"]["shape"] == [5, 10]
        np.testing.assert_allclose(np.array(out["probabilities"]["data"]).reshape(5, 10), probabilities, atol=1e-6)


def test_flat_data_and_requested_outputs(serve):
    client = serve("digits").client
    body = {
        "inputs": [{"name": "pixels", "shape": [5, 64], "datatype": "FP32", "data": PIXELS.reshape(-1).tolist()}],
        "outputs": [{"name": "label"}],
    }
    doc = client.post("/v2/models/digits/infer", body).json()
    assert [o["name"] for o in doc["outputs"]] == ["label"]
    assert "id" not in doc
    assert doc["outputs"][0]["data"] == digits_direct(artifact("digits"), PIXELS)[0].tolist()


def test_binary_tensor_extension_in_and_out(serve):
    client = serve("digits").client
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [5, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": PIXELS.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label_name"}],
        }
    ).encode()
    reply = client.post(
        "/v2/models/digits/infer",
        header + PIXELS.astype("<f4").tobytes(),
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status == 200, reply.body
    length = int(reply.headers["Inference-Header-Content-Length"])
    doc = json.loads(reply.body[:length])
    probs_meta, names_meta = doc["outputs"]
    assert probs_meta["parameters"]["binary_data_size"] == 5 * 10 * 4
    received = np.frombuffer(reply.body[length:], dtype="<f4").reshape(5, 10)
    labels, probabilities = digits_direct(artifact("digits"), PIXELS)
    np.testing.assert_allclose(received, probabilities, atol=1e-6)
    assert names_meta["data"] == [str(x) for x in labels]


def test_binary_bytes_output_is_length_prefixed(serve):
    client = serve("digits").client
    body = _infer_body("digits") | {"outputs": [{"name": "label_name", "parameters": {"binary_data": True}}]}
    reply = client.post("/v2/models/digits/infer", body)
    length = int(reply.headers["Inference-Header-Content-Length"])
    raw = reply.body[length:]
    items, offset = [], 0
    while offset < len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    assert items == [str(x) for x in digits_direct(artifact("digits"), PIXELS)[0]]


def test_base64_body_from_api_gateway(serve):
    """API Gateway base64-encodes binary media types; the same JSON must decode either way."""
    client = serve("digits").client
    from onnxfn.local.events import api_gateway_event

    event = api_gateway_event("POST", "/v2/models/digits/infer", json.dumps(_infer_body("digits")), {})
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    reply = client.call("POST", "/v2/models/digits/infer", event=event)
    assert reply.status == 200
    assert reply.json()["outputs"][0]["data"] == digits_direct(artifact("digits"), PIXELS)[0].tolist()


def test_minilm_infer_matches_onnxruntime(serve):
    client = serve("minilm").client
    expected = minilm_direct(artifact("minilm"), SENTENCES)
    for path in ("/v2/models/minilm/infer", "/v2/models/minilm/versions/1/infer"):
        reply = client.post(path, _infer_body("minilm"))
        assert reply.status == 200, reply.body
        out = reply.json()["outputs"][0]
        assert out["name"] == "embedding" and out["datatype"] == "FP32" and out["shape"] == [3, 384]
        got = np.array(out["data"], dtype=np.float32).reshape(3, 384)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_v1_predict_digits_rows_and_columns(serve):
    client = serve("digits").client
    labels, probabilities = digits_direct(artifact("digits"), PIXELS)
    rows = client.post("/v1/models/digits:predict", {"instances": PIXELS.tolist()})
    assert rows.status == 200, rows.body
    predictions = rows.json()["predictions"]
    assert [p["label"] for p in predictions] == labels.tolist()
    assert [p["label_name"] for p in predictions] == [str(x) for x in labels]
    np.testing.assert_allclose([p["probabilities"] for p in predictions], probabilities, atol=1e-6)
    columns = client.post("/v1/models/digits/versions/1:predict", {"inputs": {"pixels": PIXELS.tolist()}})
    assert columns.status == 200, columns.body
    assert columns.json()["outputs"]["label"] == labels.tolist()


def test_v1_predict_minilm_strings_and_b64(serve):
    client = serve("minilm").client
    expected = minilm_direct(artifact("minilm"), SENTENCES)
    plain = client.post("/v1/models/minilm:predict", {"instances": SENTENCES})
    assert plain.status == 200, plain.body
    np.testing.assert_allclose(np.array(plain.json()["predictions"]), expected, atol=1e-5)
    encoded = [{"b64": base64.b64encode(s.encode()).decode()} for s in SENTENCES]
    b64 = client.post("/v1/models/minilm:predict", {"instances": [{"text": e} for e in encoded]})
    assert b64.status == 200, b64.body
    np.testing.assert_allclose(np.array(b64.json()["predictions"]), expected, atol=1e-5)
    columnar = client.post("/v1/models/minilm:predict", {"inputs": SENTENCES[:1]})
    single = minilm_direct(artifact("minilm"), SENTENCES[:1])  # dynamic int8 scales depend on the batch
    np.testing.assert_allclose(np.array(columnar.json()["outputs"]), single, atol=1e-5)


def test_openapi_document_and_swagger_ui(serve):
    client = serve("digits").client
    html = client.get("/swagger")
    assert html.status == 200 and b"swagger-ui" in html.body.lower()
    doc = client.call("GET", "/swagger", event=_with_query("/swagger", "format=json")).json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v2/models/{model}/infer", "/v1/models/{model}:predict", "/v2/health/ready"):
        assert path in doc["paths"], sorted(doc["paths"])
    infer = doc["paths"]["/v2/models/{model}/infer"]["post"]
    assert "application/octet-stream" in infer["requestBody"]["content"]


def _with_query(path: str, query: str) -> dict:
    from onnxfn.local.events import api_gateway_event

    return api_gateway_event("GET", path, None, {}, query)

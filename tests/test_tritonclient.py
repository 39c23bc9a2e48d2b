"""tritonclient.http, unchanged, against the handler (through a small HTTP-to-event adapter)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from sklearn.datasets import load_digits

from tests.conftest import artifact
from tests.http_adapter import serve_handler
from tests.reference import digits_direct, minilm_direct

SENTENCES = ["Serverless inference with ONNX.", "A dog runs across the field.", "Quantized weights are int8."]


@pytest.fixture
def triton(serve):
    def _open(name: str):
        served = serve(name)
        return served, serve_handler(served.client.api.lambda_handler)

    return _open


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_digits_with_tritonclient(triton, binary):
    served, server = triton("digits")
    pixels = load_digits().data[:4].astype(np.float32)
    with server as url:
        client = httpclient.InferenceServerClient(url=url)
        assert client.is_server_live()
        assert client.is_model_ready("digits")
        metadata = client.get_model_metadata("digits")
        assert metadata["inputs"][0]["name"] == "pixels"
        tensor = httpclient.InferInput("pixels", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels, binary_data=binary)
        outputs = [
            httpclient.InferRequestedOutput("probabilities", binary_data=binary),
            httpclient.InferRequestedOutput("label", binary_data=binary),
        ]
        result = client.infer("digits", [tensor], outputs=outputs, request_id="t-1")
        client.close()
    labels, probabilities = digits_direct(artifact("digits"), pixels)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    assert result.get_response()["id"] == "t-1"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_minilm_with_tritonclient(triton, binary):
    served, server = triton("minilm")
    texts = np.array([s.encode() for s in SENTENCES], dtype=np.object_)
    with server as url:
        client = httpclient.InferenceServerClient(url=url)
        tensor = httpclient.InferInput("text", [len(SENTENCES)], "BYTES")
        tensor.set_data_from_numpy(texts, binary_data=binary)
        result = client.infer(
            "minilm", [tensor], outputs=[httpclient.InferRequestedOutput("embedding", binary_data=binary)]
        )
        client.close()
    embedding = result.as_numpy("embedding")
    assert embedding.shape == (3, 384) and embedding.dtype == np.float32
    np.testing.assert_allclose(embedding, minilm_direct(artifact("minilm"), SENTENCES), atol=1e-5)


def test_tritonclient_sees_clear_errors(triton):
    served, server = triton("digits")
    with server as url:
        client = httpclient.InferenceServerClient(url=url)
        tensor = httpclient.InferInput("pixels", [1, 63], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 63), dtype=np.float32))
        with pytest.raises(Exception, match=r"expected FP32 shape \[-1, 64\], got shape \[1, 63\]"):
            client.infer("digits", [tensor])
        client.close()

"""The image packaging under ``onnxfn serve``: no Docker here, so an image function runs on its
runtime's interpreter with its build context's handlers and the layer built from the image's own
pinned requirements (``layers/requirements.txt``, which the Dockerfile installs)."""

from __future__ import annotations

import json

import pytest
import requests

from onnxfn.local.assembly import flatten
from onnxfn.local.synth import synthesize
from tests.serve.conftest import ROOT, _serve

pytestmark = pytest.mark.slow


def test_an_image_function_serves_faithfully_without_docker(tmp_path_factory):
    out = tmp_path_factory.mktemp("image") / "cdk.out"
    synthesize(ROOT, out, {"onnxfn:packaging": "image"})
    template = flatten(json.loads((out / "Onnxfn.template.json").read_text()), out)  # each model's stack read in
    images = [r for r in template["Resources"].values() if r["Properties"].get("PackageType") == "Image"]
    assert len(images) == 6  # three functions per model, all images
    context = out / images[0]["Metadata"]["aws:asset:path"]
    assert (context / "layers" / "requirements.txt").read_bytes() == (ROOT / "layers" / "requirements.txt").read_bytes()
    with _serve(out, tmp_path_factory.mktemp("image-serve"), []) as served:
        functions = served.state["functions"].values()
        assert all(f["faithful"] and "Python 3.12" in f["runtime"] for f in functions)
        headers = {"x-api-key": served.state["api_key"]}
        body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
        reply = requests.post(f"{served.url}/v2/models/digits/infer", json=body, headers=headers, timeout=60)
        assert reply.status_code == 200, reply.text
        assert reply.json()["outputs"][0]["name"] == "label"
        text = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["an image function"]}]}
        reply = requests.post(f"{served.url}/v2/models/minilm/infer", json=text, headers=headers, timeout=60)
        assert reply.status_code == 200 and reply.json()["outputs"][0]["shape"] == [1, 384]
        assert "image function runs with the layer built from the image's pinned requirements" in served.output()

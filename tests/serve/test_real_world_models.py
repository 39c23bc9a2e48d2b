"""The models people bring, added with `onnxfn add` into an app folder of their own and served as
deployed: a CNN exported with batch 1 (its Convs quantized by default), a voice detector with its state
on axis 1 and a scalar sample rate, a scikit-learn tree pipeline (nothing to quantize, and why), a Keras
classifier and a detector behind an image pipeline. Nobody edits cdk.json: `add` registers each model,
the pinned CDK CLI synthesizes the app, `onnxfn serve` runs it, and requests go over HTTP, through S3."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from contract.manifest import Manifest
from onnxfn.cli import main
from onnxfn.local.assembly import flatten
from tests.models.graphs import DETECTOR_PIPELINE, fixed_batch_cnn, jpeg, quadrant_detector, silero_like
from tests.prepare.test_keras import _saved as saved_keras
from tests.serve.conftest import ROOT, _serve

MODELS = ("cnn", "vad", "forest", "kclf", "det")


def _vad_requests(path: Path) -> Path:
    rng = np.random.default_rng(1)
    with path.open("w") as out:
        for rows in (1, 2, 3, 2):
            out.write(
                json.dumps(
                    {
                        "inputs": [
                            {
                                "name": "input",
                                "datatype": "FP32",
                                "shape": [rows, 64],
                                "data": rng.standard_normal(rows * 64).tolist(),
                            },
                            {
                                "name": "state",
                                "datatype": "FP32",
                                "shape": [2, rows, 16],
                                "data": [0.0] * (2 * rows * 16),
                            },
                            {"name": "sr", "datatype": "INT64", "shape": [], "data": [16000]},
                        ]
                    }
                )
                + "\n"
            )
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """An app folder (its own cdk.json and artifacts), the five models added to it, synthesized by the CLI."""
    folder = tmp_path_factory.mktemp("app")
    artifacts = folder / "model_artifacts"
    document = json.loads((ROOT / "cdk.json").read_text())
    document["app"] = f"{sys.executable} {ROOT / 'app.py'}"
    document["context"]["onnxfn"]["artifacts_dir"] = str(artifacts)
    del document["context"]["onnxfn"]["models"]
    (folder / "cdk.json").write_text(json.dumps(document, indent=2))
    x, y = load_iris(return_X_y=True)
    joblib.dump(
        make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0)).fit(x, y),
        folder / "forest.joblib",
    )
    (folder / "det.json").write_text(json.dumps(DETECTOR_PIPELINE))
    sources = {
        "cnn": [str(fixed_batch_cnn(folder / "cnn.onnx"))],
        "vad": [str(silero_like(folder / "vad.onnx")), "--samples", str(_vad_requests(folder / "vad.jsonl"))],
        "forest": [str(folder / "forest.joblib"), "--trust-pickle", "--input-name", "measurements"],
        "kclf": [str(saved_keras(folder, "kclf", "softmax")), "--labels", "low,mid,high"],
        "det": [str(quadrant_detector(folder / "det.onnx")), "--pipeline", str(folder / "det.json")],
    }
    seconds = {}
    for name, args in sources.items():
        started = time.perf_counter()
        code = main(
            ["--root", str(artifacts), "add", *args, "--name", name, "--no-fit", "--cdk-json", str(folder / "cdk.json")]
        )
        seconds[name] = time.perf_counter() - started
        assert code == 0, name
    env = {
        **os.environ,
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "JSII_RUNTIME_PACKAGE_CACHE_ROOT": str(ROOT / ".cache" / "jsii"),
    }
    cli = ROOT / "node_modules" / ".bin" / "cdk"
    out = folder / "cdk.out"
    result = subprocess.run(
        [str(cli), "synth", "--no-notices", "-q", "-o", str(out)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder, artifacts, out, seconds, result.stderr


def test_every_added_model_is_registered_and_synthesized(app):
    folder, artifacts, out, seconds, stderr = app
    listed = json.loads((folder / "cdk.json").read_text())["context"]["onnxfn"]["models"]
    assert sorted(listed) == sorted(MODELS) and all("memory_mb" in listed[name] for name in MODELS)
    template = flatten(json.loads((out / "Onnxfn.template.json").read_text()), out)  # each model's stack read in
    served = {
        r["Properties"]["Environment"]["Variables"]["MODEL_NAME"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
        and "MODEL_NAME" in r["Properties"].get("Environment", {}).get("Variables", {})
    }
    assert served == set(MODELS)
    det_function = next(
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
        and r["Properties"].get("Environment", {}).get("Variables", {}).get("MODEL_NAME") == "det"
    )
    assert len(det_function["Layers"]) == 2  # the function layer and the image pipeline's Pillow layer
    assert "onnxfn budget det" in stderr and "not deployed" not in stderr
    facts = {name: Manifest.load(artifacts / name / "manifest.json") for name in MODELS}
    assert facts["cnn"].quantization["method"] == "static" and facts["cnn"].quantization["quantized_nodes"] == 3
    assert "TreeEnsemble" in facts["forest"].quantization["reason"]
    print(
        "\n"
        + "\n".join(
            f"{name}: {seconds[name]:.1f} s, {sum(f.bytes for f in m.files) / 1e3:.1f} kB, "
            f"quantization {m.quantization.get('method')} ({m.quantization.get('quantized_nodes', 0)} nodes), "
            f"drift {m.validation['drift']}"
            for name, m in facts.items()
        )
    )


@pytest.fixture(scope="module")
def served(app, tmp_path_factory):
    _, _, out, _, _ = app
    with _serve(out, tmp_path_factory.mktemp("served-real"), ["--api-key", "k", "--retry-after", "1"]) as server:
        yield server


def _infer(served, model, *tensors):
    return served.client.request("POST", f"/v2/models/{model}/infer", json.dumps({"inputs": list(tensors)}))


def test_the_fixed_batch_cnn_takes_one_image_a_request(served):
    image = {"name": "image", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [0.5] * 3072}
    reply = _infer(served, "cnn", image)
    assert reply.status == 200, reply.body
    probabilities = next(o for o in reply.json()["outputs"] if o["name"] == "probabilities")
    assert probabilities["shape"] == [1, 4] and abs(sum(probabilities["data"]) - 1) < 1e-3
    two = {**image, "shape": [2, 3, 32, 32], "data": [0.5] * 6144}
    assert _infer(served, "cnn", two).status == 400  # the shape says 1


def test_the_voice_detector_takes_its_state_whole(served):
    reply = _infer(
        served,
        "vad",
        {"name": "input", "datatype": "FP32", "shape": [3, 64], "data": [0.1] * 192},
        {"name": "state", "datatype": "FP32", "shape": [2, 3, 16], "data": [0.0] * 96},
        {"name": "sr", "datatype": "INT64", "shape": [], "data": [8000]},
    )
    assert reply.status == 200, reply.body
    shapes = {o["name"]: o["shape"] for o in reply.json()["outputs"]}
    assert shapes == {"output": [3, 1], "stateN": [2, 3, 16]}
    v1 = served.client.request("POST", "/v1/models/vad:predict", json.dumps({"instances": [{"input": [0.0] * 64}]}))
    assert v1.status == 400 and "not batch-first" in v1.json()["error"]


def test_the_forest_and_the_keras_classifier_answer_labels(served):
    forest = served.client.request(
        "POST", "/v1/models/forest:predict", json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
    )
    assert forest.status == 200, forest.body
    assert [p["label"] for p in forest.json()["predictions"]] == [0, 2]
    keras_reply = _infer(served, "kclf", {"name": "features", "datatype": "FP32", "shape": [1, 20], "data": [0.0] * 20})
    assert keras_reply.status == 200, keras_reply.body
    names = next(o for o in keras_reply.json()["outputs"] if o["name"] == "label_name")["data"]
    assert names[0] in ("low", "mid", "high")


def test_the_detector_answers_a_jpeg_with_boxes_over_http_and_through_s3(served, tmp_path):
    image = jpeg(128, 96, (0, 0, 63, 47))
    body = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(image).decode()]}
    reply = _infer(served, "det", body)
    assert reply.status == 200, reply.body
    detections = json.loads(next(o for o in reply.json()["outputs"] if o["name"] == "detections")["data"][0])
    assert len(detections) == 1 and detections[0]["label"] == "bright"
    np.testing.assert_allclose(detections[0]["box"], [0, 0, 64, 48], atol=0.5)
    bad = _infer(served, "det", {**body, "data": [base64.b64encode(b"not an image").decode()]})
    assert bad.status == 400 and "expected JPEG or PNG" in bad.json()["error"]

    lines = tmp_path / "photos.jsonl"
    with lines.open("w") as out:
        for box in ((64, 0, 127, 47), (0, 48, 63, 95)):
            encoded = base64.b64encode(jpeg(128, 96, box)).decode()
            out.write(
                json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [encoded]}]}) + "\n"
            )
    key = served.client.put_file("det", lines)
    summary = served.client.wait_for_batch("det", key)
    assert summary is not None and summary["scored"] == 2 and summary["failed"] == 0
    entry = served.client.model("det")
    scored = served.client.aws("s3").get_object(Bucket=entry["bucket"], Key=summary["output_key"])["Body"].read()
    boxes = []
    for line in scored.decode().splitlines():
        outputs = {o["name"]: o for o in json.loads(line)["outputs"]}
        boxes.append(json.loads(outputs["detections"]["data"][0])[0]["box"])
    np.testing.assert_allclose(boxes, [[64, 0, 128, 48], [0, 48, 64, 96]], atol=0.5)

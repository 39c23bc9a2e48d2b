"""Image pipelines around a model: JPEG in, a detector's boxes (or a classifier's labels) out, the same
code in `onnxfn add`'s gate and in the function; and a custom pipeline module of the user's own."""

from __future__ import annotations

import base64
import json
import textwrap

import numpy as np
import onnxruntime as ort

from contract.manifest import Manifest
from handlers.runtime.pipelines import build_pipeline
from onnxfn.cli import main
from tests.models.graphs import DETECTOR_PIPELINE, jpeg, quadrant_detector
from tests.prepare.test_add import _mlp


def _add(root, source, name, *extra):
    return main(["--root", str(root), "add", str(source), "--name", name, "--no-fit", *extra])


def _load(folder):
    manifest = Manifest.load(folder / "manifest.json")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    files = {f.path: (folder / f.path).read_bytes() for f in manifest.files if f.role != "model"}
    return manifest, build_pipeline(manifest, session, files)


def test_a_detector_answers_a_jpeg_with_boxes_in_its_own_pixels(tmp_path):
    root = tmp_path / "artifacts"
    (tmp_path / "det.json").write_text(json.dumps(DETECTOR_PIPELINE))
    assert _add(root, quadrant_detector(tmp_path / "det.onnx"), "det", "--pipeline", str(tmp_path / "det.json")) == 0
    manifest, pipeline = _load(root / "det")
    assert [(t.name, t.datatype) for t in manifest.inputs] == [("image", "BYTES")]
    assert [t.name for t in manifest.outputs] == ["detections", "count"]
    assert manifest.quantization["method"] == "none"  # no weights: the reason says so
    assert "nothing to quantize" in manifest.quantization["reason"]
    # top-left quadrant of a 128×96 image is white; bytes and base64 text both work
    image = jpeg(128, 96, (0, 0, 63, 47))
    batch = np.array([image, base64.b64encode(jpeg(128, 96, (64, 48, 127, 95)))], dtype=object)
    results = pipeline.run({"image": batch}, ["detections", "count"])
    assert results["count"].tolist() == [1, 1]
    first, second = (json.loads(d) for d in results["detections"])
    assert first[0]["label"] == "bright" and first[0]["score"] > 0.99
    np.testing.assert_allclose(first[0]["box"], [0, 0, 64, 48], atol=0.5)
    np.testing.assert_allclose(second[0]["box"], [64, 48, 128, 96], atol=0.5)


def test_an_image_classifier_and_a_bad_image(tmp_path):
    from handlers.runtime.errors import InvalidInput
    from tests.models.graphs import fixed_batch_cnn

    root = tmp_path / "artifacts"
    config = {"kind": "image-classification", "size": [32, 32], "labels": ["a", "b", "c", "d"], "mean": [0.5] * 3}
    (tmp_path / "cls.json").write_text(json.dumps(config))
    assert _add(root, fixed_batch_cnn(tmp_path / "cnn.onnx"), "cnn", "--pipeline", str(tmp_path / "cls.json")) == 0
    manifest, pipeline = _load(root / "cnn")
    assert manifest.limits.max_batch == 1  # the model's fixed batch holds for images too
    results = pipeline.run(
        {"image": np.array([jpeg(40, 30, (0, 0, 10, 10))], dtype=object)}, ["label_name", "probabilities"]
    )
    assert (
        results["label_name"][0] in (b"a", b"b", b"c", b"d") and abs(float(results["probabilities"].sum()) - 1) < 1e-5
    )
    try:
        pipeline.run({"image": np.array([b"\xff\xd8\xffnot really a jpeg"], dtype=object)}, ["label"])
    except InvalidInput as exc:
        assert 'input "image" element 0: not a readable JPEG or PNG' in exc.message
    else:
        raise AssertionError("a broken JPEG was scored")


CUSTOM = textwrap.dedent(
    """
    import numpy as np
    from handlers.runtime.errors import InvalidInput
    from handlers.runtime.pipelines.custom import ModelPipeline

    class Pipeline(ModelPipeline):
        INPUTS = [{"name": "celsius", "datatype": "FP32", "shape": [-1]}]
        OUTPUTS = [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}, {"name": "hot", "datatype": "BOOL", "shape": [-1]}]

        def preprocess(self, inputs):
            celsius = inputs["celsius"]
            if (celsius < -273.15).any():
                raise InvalidInput('input "celsius": below absolute zero')
            return {"x": np.repeat(((celsius - 20.0) / 10.0)[:, None], 16, axis=1).astype(np.float32)}

        def postprocess(self, outputs, inputs):
            return {"y": outputs["y"], "hot": inputs["celsius"] > 30.0}

        @classmethod
        def example_inputs(cls):
            return [{"celsius": np.linspace(-10, 40, 8, dtype=np.float32)} for _ in range(4)]
    """
)


def test_a_custom_pipeline_module_runs_in_the_gate_and_the_function(tmp_path):
    root = tmp_path / "artifacts"
    (tmp_path / "thermo.py").write_text(CUSTOM)
    assert (
        _add(
            root,
            _mlp(tmp_path / "mlp.onnx"),
            "thermo",
            "--pipeline",
            str(tmp_path / "thermo.py"),
            "--max-rel-error",
            "0.25",
        )
        == 0
    )
    manifest, pipeline = _load(root / "thermo")
    assert manifest.pipeline is not None and manifest.pipeline.kind == "custom"
    assert any(f.path == "thermo.py" and f.role == "code" for f in manifest.files)
    assert [t.name for t in manifest.inputs] == ["celsius"]
    results = pipeline.run({"celsius": np.array([25.0, 35.0], np.float32)}, ["hot", "y"])
    assert results["hot"].tolist() == [False, True] and results["y"].shape == (2, 4)
    from handlers.runtime.errors import InvalidInput

    try:
        pipeline.run({"celsius": np.array([-300.0], np.float32)}, ["hot"])
    except InvalidInput as exc:
        assert "below absolute zero" in exc.message
    else:
        raise AssertionError("the module's own 400 was lost")

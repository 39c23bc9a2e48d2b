from __future__ import annotations

import copy
import json
import re

import pytest

from contract.manifest import ClassificationPipeline, Manifest, ManifestError, TextEmbeddingPipeline

VALID = {
    "schema_version": 1,
    "name": "churn",
    "version": "3",
    "files": [
        {"path": "model.onnx", "role": "model", "sha256": "a" * 64, "bytes": 10},
        {"path": "tokenizer.json", "role": "tokenizer", "sha256": "b" * 64, "bytes": 5},
    ],
    "onnx": {"opset": 17},
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}],
    "pipeline": {"kind": "text-embedding", "tokenizer": "tokenizer.json"},
}


def test_round_trip_keeps_every_field():
    manifest = Manifest.from_dict(VALID)
    assert isinstance(manifest.pipeline, TextEmbeddingPipeline)
    assert manifest.inputs[0].shape == (-1,)
    assert manifest.model_file.path == "model.onnx"
    again = Manifest.loads(manifest.to_json())
    assert again == manifest
    assert json.loads(manifest.to_json())["limits"] == {"max_batch": 64, "max_elements": 1_048_576}


def test_classification_labels_round_trip():
    data = copy.deepcopy(VALID)
    data["pipeline"] = {"kind": "classification", "labels": ["no", "yes"], "softmax": True}
    data["files"] = data["files"][:1]
    manifest = Manifest.from_dict(data)
    assert manifest.pipeline == ClassificationPipeline(labels=("no", "yes"), softmax=True)
    assert Manifest.loads(manifest.to_json()) == manifest


def _broken(path: str, value):
    data = copy.deepcopy(VALID)
    target = data
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is KeyError:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("schema_version", 2, "reads version 1"),
        ("name", "Bad Name", "manifest.name"),
        ("name", KeyError, "manifest.name: required"),
        ("files.0.sha256", "xyz", "manifest.files[0].sha256"),
        ("files.0.path", "../escape.onnx", "relative path inside"),
        ("files.0.role", "tokenizer", "exactly one file with role 'model'"),
        ("files.0.bytes", -1, "integer >= 0"),
        ("inputs.0.datatype", "FLOAT", "expected one of BOOL"),
        ("inputs.0.shape", "x", "expected a list of integers"),
        ("inputs.0.batch_axis", 1, "1 is not an axis of shape [-1]"),
        ("inputs.0.batch_axis", "0", "expected an integer"),
        ("inputs.0.shape", [0], "positive or -1"),
        ("inputs", [], "non-empty list of tensors"),
        ("onnx", {"opset": 0}, "manifest.onnx.opset"),
        ("pipeline", {"kind": "magic"}, "pipeline.kind"),
        ("pipeline", {"kind": "text-embedding", "tokenizer": "vocab.txt"}, "no entry for 'vocab.txt'"),
        ("pipeline", {"kind": "text-embedding", "pooling": "max"}, "pipeline.pooling"),
        ("surprise", 1, "unknown field(s) surprise"),
    ],
)
def test_strict_parsing_names_the_field(path, value, message):
    with pytest.raises(ManifestError, match=re.escape(message)):
        Manifest.from_dict(_broken(path, value))


def test_not_json():
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.loads(b"\xff{")


def test_every_pipeline_kind_of_the_contract_has_a_runner():
    from contract.pipelines import PIPELINES as CONFIGS
    from handlers.runtime.pipelines import PIPELINES as RUNNERS

    assert set(CONFIGS) == set(RUNNERS)


def test_batch_axes_scalars_and_the_non_finite_flag_round_trip():
    data = json.loads(json.dumps(VALID))
    data["inputs"] = [
        {"name": "x", "datatype": "FP32", "shape": [-1, 512]},
        {"name": "state", "datatype": "FP32", "shape": [2, -1, 128], "batch_axis": 1},
        {"name": "sr", "datatype": "INT64", "shape": []},
        {"name": "table", "datatype": "FP32", "shape": [4, 4], "batch_axis": None},
    ]
    data["pipeline"] = None
    data["limits"] = {"max_batch": 8, "allow_non_finite": True}
    manifest = Manifest.from_dict(data)
    x, state, sr, table = manifest.inputs
    assert (x.batch_axis, state.batch_axis, sr.batch_axis, table.batch_axis) == (0, 1, None, None)
    assert state.batch_of((2, 3, 128)) == 3 and sr.batch_of(()) is None
    assert not manifest.batch_first and manifest.limits.allow_non_finite
    again = json.loads(manifest.to_json())
    assert again["inputs"] == data["inputs"]
    assert Manifest.loads(manifest.to_json()) == manifest


def test_a_fixed_batch_caps_the_rows_of_one_run():
    data = json.loads(json.dumps(VALID))
    data["inputs"] = [{"name": "image", "datatype": "FP32", "shape": [1, 3, 8, 8]}]
    data["pipeline"] = None
    manifest = Manifest.from_dict(data)
    assert manifest.inputs[0].fixed_batch == 1 and manifest.rows_per_run == 1 and manifest.batch_first

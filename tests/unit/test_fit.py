"""``onnxfn fit``: a model's cold start, warm latency and cost per memory size, measured as Lambda runs it."""

from __future__ import annotations

import json

import pytest

from contract.manifest import Manifest
from onnxfn.cli import main
from onnxfn.local.fit import PRICE_PER_GB_S, PRICE_PER_REQUEST, billed_cost, request_body
from tests.conftest import artifact


def test_billed_cost_rounds_up_to_the_millisecond_and_adds_the_request():
    assert billed_cost(1024, 99.2) == pytest.approx(0.1 * PRICE_PER_GB_S["x86_64"] + PRICE_PER_REQUEST)
    assert billed_cost(2048, 1.0, "arm64") == pytest.approx(2 * 0.001 * PRICE_PER_GB_S["arm64"] + PRICE_PER_REQUEST)


def test_the_fit_request_follows_the_manifest():
    text = json.loads(request_body(Manifest.load(artifact("minilm") / "manifest.json")))["inputs"]
    assert text == [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["onnxfn fit"]}]
    pixels = json.loads(request_body(Manifest.load(artifact("digits") / "manifest.json")))["inputs"]
    assert pixels[0]["shape"] == [1, 64] and len(pixels[0]["data"]) == 64
    batch = json.loads(request_body(Manifest.load(artifact("minilm") / "manifest.json"), 8))["inputs"][0]
    assert batch["shape"] == [8] and len(set(batch["data"])) == 1 and len(batch["data"][0].split()) > 60


def test_fit_measures_each_memory_size_on_the_faithful_runtime(capsys):
    args = ["fit", "digits", "--memory", "512,1769", "--cold-runs", "1", "--warm-runs", "3", "--json"]
    assert main(["--root", str(artifact("digits").parent), *args]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert (fit["model"], fit["runtime"], fit["load_mode"], fit["batch"]) == ("digits", "python3.12", "eager", 1)
    assert "python3.12" in fit["interpreter"]
    small, large = fit["rows"]
    assert (small["memory_mb"], small["vcpus"], large["vcpus"]) == (512, 0.289, 1.0)
    for row in fit["rows"]:
        assert row["cold_start_ms"] > row["init_ms"] > 0  # spawn → response includes the init
        assert row["warm_ms"] > 0 and row["peak_rss_mb"] > 50
        assert row["warm_cost_per_million"] == pytest.approx(
            billed_cost(row["memory_mb"], row["warm_ms"]) * 1e6, abs=1e-4
        )
        assert "cgroup quota" in row["cpu"]


def test_fit_of_a_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "fit", "nothing"]) == 2
    assert "no model 'nothing'" in capsys.readouterr().err


def test_an_image_model_is_fit_with_its_pipeline_layer_and_a_real_jpeg(tmp_path, capsys):
    """The Lambda fit of a detector behind an image pipeline: a JPEG request, Pillow from its own layer."""
    import base64

    from tests.models.graphs import DETECTOR_PIPELINE, quadrant_detector

    (tmp_path / "det.json").write_text(json.dumps(DETECTOR_PIPELINE))
    root = tmp_path / "artifacts"
    source = quadrant_detector(tmp_path / "det.onnx")
    assert (
        main(
            [
                "--root",
                str(root),
                "add",
                str(source),
                "--name",
                "det",
                "--pipeline",
                str(tmp_path / "det.json"),
                "--no-fit",
            ]
        )
        == 0
    )
    body = json.loads(request_body(Manifest.load(root / "det" / "manifest.json")))["inputs"][0]
    assert body["datatype"] == "BYTES" and base64.b64decode(body["data"][0]).startswith(b"\xff\xd8\xff")
    capsys.readouterr()
    args = ["fit", "det", "--memory", "512", "--cold-runs", "1", "--warm-runs", "2", "--json"]
    assert main(["--root", str(root), *args]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["warm_ms"] > 0 and row["cold_start_ms"] > row["init_ms"] > 0


def test_the_fit_request_follows_each_tensor_s_batch_axis(tmp_path):
    from tests.models.graphs import silero_like

    root = tmp_path / "artifacts"
    assert main(["--root", str(root), "add", str(silero_like(tmp_path / "vad.onnx")), "--name", "vad", "--no-fit"]) == 0
    inputs = {
        t["name"]: t for t in json.loads(request_body(Manifest.load(root / "vad" / "manifest.json"), 3))["inputs"]
    }
    assert (inputs["input"]["shape"], inputs["state"]["shape"], inputs["sr"]["shape"]) == ([3, 64], [2, 3, 16], [])

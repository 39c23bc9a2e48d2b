"""`onnxfn add` end to end for every source kind, on small models built here; the gate's pass and fail
paths; bad input gives one error line and leaves nothing in the artifact folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import joblib
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from contract.manifest import Manifest
from onnxfn.cli import main

RNG = np.random.default_rng(7)


def _mlp(path: Path, inputs: int = 16, hidden: int = 64, outputs: int = 4, dims: list | None = None) -> Path:
    w1 = numpy_helper.from_array(RNG.standard_normal((inputs, hidden)).astype(np.float32) * 0.3, "w1")
    w2 = numpy_helper.from_array(RNG.standard_normal((hidden, outputs)).astype(np.float32) * 0.3, "w2")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims or ["batch", inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(path))
    return path


def _run(root: Path, *args: str, fit: bool = False) -> int:
    return main(["--root", str(root), "add", *args, *([] if fit else ["--no-fit"])])


def _artifact_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_onnx_source_writes_a_servable_artifact_with_report(tmp_path, capsys):
    root = tmp_path / "artifacts"
    # dynamic int8 on a small random MLP: measured max relative error 0.18
    assert _run(root, str(_mlp(tmp_path / "mlp.onnx")), "--name", "mlp", "--max-rel-error", "0.25", fit=True) == 0
    manifest = Manifest.load(root / "mlp" / "manifest.json")
    assert manifest.inputs[0].name == "x" and manifest.inputs[0].shape == (-1, 16)
    assert manifest.quantization["method"] == "dynamic"
    assert manifest.onnx.optimization_level == "extended"
    validation = manifest.validation
    assert validation["drift"]["max_rel_error"] <= 0.25
    assert set(validation["latency_ms"]) == {"original", "prepared"}
    assert validation["lambda"]["recommended_memory_mb"] >= 512
    files = _artifact_files(root / "mlp")
    assert {"manifest.json", "model.onnx", "report.md", "latency.png", "drift.png"} <= set(files)
    assert (root / "mlp" / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "mlp" in out
    # the Lambda fit, measured on the function as Lambda runs it at four memory sizes
    assert "mlp: Lambda fit (python3.12, x86_64, model loaded at init (eager); requests of batch 1)" in " ".join(
        out.split()
    )
    rows = re.findall(r"│\s*([\d,]+)\s*│\s*(\d\.\d\d)\s*│\s*([\d,]+)\s*│", out)  # memory, vCPU, cold start ms
    assert [(size, vcpu) for size, vcpu, _ in rows] == [
        ("512", "0.29"),
        ("1,024", "0.58"),
        ("1,769", "1.00"),
        ("3,008", "1.70"),
    ]
    assert all(int(cold.replace(",", "")) > 0 for _, _, cold in rows)
    assert [p.name for p in root.iterdir()] == ["mlp"]  # no staging folder left behind
    # list and show print the figures
    assert main(["--root", str(root), "list"]) == 0 and "mlp" in capsys.readouterr().out
    assert main(["--root", str(root), "show", "mlp"]) == 0 and "max_abs_error" in capsys.readouterr().out


def test_sklearn_source_needs_trust_and_becomes_a_classifier(tmp_path, capsys):
    features, labels = load_digits(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    joblib.dump(model, tmp_path / "clf.joblib")
    root = tmp_path / "artifacts"
    assert _run(root, str(tmp_path / "clf.joblib"), "--name", "clf") == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert not (root / "clf").exists()
    assert _run(root, str(tmp_path / "clf.joblib"), "--name", "clf", "--trust-pickle", "--input-name", "pixels") == 0
    manifest = Manifest.load(root / "clf" / "manifest.json")
    assert manifest.pipeline is not None and manifest.pipeline.kind == "classification"
    assert manifest.pipeline.labels == tuple(str(i) for i in range(10))
    assert [t.name for t in manifest.outputs] == ["label", "label_name", "probabilities"]
    assert manifest.validation["drift"]["top1_agreement"] >= 0.99


def test_pytorch_source_with_labels(tmp_path):
    import torch  # requirements-dev.txt pins the CPU build

    module = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    torch.save(module, tmp_path / "net.pt")
    root = tmp_path / "artifacts"
    code = _run(
        root, str(tmp_path / "net.pt"), "--name", "net", "--trust-pickle", "--input-shape", "2,12", "--labels", "a,b,c"
    )
    assert code == 0
    manifest = Manifest.load(root / "net" / "manifest.json")
    assert manifest.inputs[0].shape == (-1, 12)
    assert manifest.pipeline is not None and manifest.pipeline.softmax is True
    assert manifest.validation["drift"]["top1_agreement"] >= 0.99


def _tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's tokenizer."""
    from safetensors.numpy import save_file

    from onnxfn.demo_models import minilm_checkpoint

    folder.mkdir()
    hidden, inter, layers, vocab = 32, 64, 2, 30522
    w = {
        "embeddings.word_embeddings.weight": RNG.standard_normal((vocab, hidden)) * 0.02,
        "embeddings.position_embeddings.weight": RNG.standard_normal((512, hidden)) * 0.02,
        "embeddings.token_type_embeddings.weight": RNG.standard_normal((2, hidden)) * 0.02,
        "embeddings.LayerNorm.weight": np.ones(hidden),
        "embeddings.LayerNorm.bias": np.zeros(hidden),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name, shape in (
            ("attention.self.query", (hidden, hidden)),
            ("attention.self.key", (hidden, hidden)),
            ("attention.self.value", (hidden, hidden)),
            ("attention.output.dense", (hidden, hidden)),
            ("intermediate.dense", (inter, hidden)),
            ("output.dense", (hidden, inter)),
        ):
            w[p + name + ".weight"] = RNG.standard_normal(shape) * 0.05
            w[p + name + ".bias"] = np.zeros(shape[0])
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + name + ".weight"] = np.ones(hidden)
            w[p + name + ".bias"] = np.zeros(hidden)
    save_file({k: np.asarray(v, dtype=np.float32) for k, v in w.items()}, str(folder / "model.safetensors"))
    config = {
        "hidden_size": hidden,
        "num_attention_heads": 2,
        "num_hidden_layers": layers,
        "intermediate_size": inter,
        "layer_norm_eps": 1e-12,
        "vocab_size": vocab,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "model_type": "bert",
    }
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copyfile(minilm_checkpoint() / "tokenizer.json", folder / "tokenizer.json")
    return folder


def test_bert_checkpoint_becomes_a_text_embedding_pipeline(tmp_path):
    root = tmp_path / "artifacts"
    checkpoint = _tiny_bert(tmp_path / "tiny-bert")
    assert _run(root, str(checkpoint), "--name", "tiny") == 0
    manifest = Manifest.load(root / "tiny" / "manifest.json")
    # auto's BERT recipe: 8-bit MatMul blocks, int8 embedding rows
    assert manifest.quantization["method"] == "blockwise" and manifest.quantization["quantized_nodes"] == 12
    assert len(manifest.quantization["embedding_nodes"]) == 3
    graph = onnx.load(str(root / "tiny" / "model.onnx")).graph
    assert sum(node.op_type == "MatMulNBits" for node in graph.node) == 12
    assert manifest.pipeline is not None and manifest.pipeline.kind == "text-embedding"
    assert [t.name for t in manifest.inputs] == ["text"] and manifest.outputs[0].shape == (-1, 32)
    assert (root / "tiny" / "tokenizer.json").exists()
    assert manifest.validation["drift"]["cosine_min"] >= 0.985


def test_a_bert_checkpoint_kept_in_fp32_gets_its_report(tmp_path):
    """Every sentence's cosine is 1 within a float: the drift plot once failed to bin them."""
    root = tmp_path / "artifacts"
    assert _run(root, str(_tiny_bert(tmp_path / "tiny-bert")), "--name", "tiny", "--quantize", "none") == 0
    assert (root / "tiny" / "drift.png").read_bytes()[:4] == b"\x89PNG"


def test_blockwise_flags_reach_the_graph_and_the_manifest(tmp_path):
    root = tmp_path / "artifacts"
    flags = ("--quantize", "blockwise", "--bits", "4", "--block-size", "16", "--accuracy-level", "1")
    assert _run(root, str(_mlp(tmp_path / "mlp.onnx")), "--name", "mlp", *flags, "--max-rel-error", "0.3") == 0
    quantization = Manifest.load(root / "mlp" / "manifest.json").quantization
    assert (quantization["bits"], quantization["block_size"], quantization["accuracy_level"]) == (4, 16, 1)
    assert quantization["quantized_nodes"] == 2 and quantization["activation_type"] == "fp32 (accuracy_level 1)"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--quantize", "dynamic", "--bits", "4"), "--bits: for --quantize blockwise only, not dynamic"),
        (("--bits", "4"), "--bits: for --quantize blockwise only; this model is quantized dynamic"),  # auto's choice
        (("--block-size", "100"), "--block-size 100: expected a power of two ≥ 16"),
        (("--quantize", "blockwise", "--embeddings", "int3"), "--embeddings 'int3': expected one of int8, int4, fp32"),
    ],
)
def test_blockwise_flags_are_checked_and_nothing_is_written(tmp_path, capsys, flags, message):
    root = tmp_path / "artifacts"
    assert _run(root, str(_mlp(tmp_path / "mlp.onnx")), "--name", "mlp", *flags) == 2
    assert message in capsys.readouterr().err
    assert _artifact_files(root) == []


def test_auto_with_block_flags_falls_back_to_fp32_when_the_gate_refuses(tmp_path):
    root = tmp_path / "artifacts"
    strict = ("--min-cosine-min", "0.9999", "--min-cosine-mean", "0.9999")
    flags = ("--bits", "4", "--block-size", "16", "--embeddings", "int4")
    assert _run(root, str(_tiny_bert(tmp_path / "tiny-bert")), "--name", "tiny", *flags, *strict) == 0
    quantization = Manifest.load(root / "tiny" / "manifest.json").quantization
    assert quantization["method"] == "none"
    assert quantization["reason"].startswith("auto chose blockwise quantization, which failed the validation gate")


def test_blockwise_says_why_a_graph_of_gemms_has_nothing_for_it(tmp_path):
    w = numpy_helper.from_array(RNG.standard_normal((4, 16)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), tmp_path / "g.onnx")
    root = tmp_path / "artifacts"
    assert _run(root, str(tmp_path / "g.onnx"), "--name", "gemm", "--quantize", "blockwise") == 0
    quantization = Manifest.load(root / "gemm" / "manifest.json").quantization
    assert quantization["quantized_nodes"] == 0
    assert quantization["reason"] == (
        "blockwise mode quantizes MatMul weights and embedding tables only; this graph's are in Gemm or Conv: "
        "--quantize auto or static"
    )


def _spy_on_runs(monkeypatch, runner: type) -> list[dict]:
    """Record the inputs of every ``runner.run`` call, then run it as deployed."""
    calls: list[dict] = []
    original = runner.run

    def run(self, inputs, outputs):
        calls.append({name: np.asarray(value) for name, value in inputs.items()})
        return original(self, inputs, outputs)

    monkeypatch.setattr(runner, "run", run)
    return calls


def test_the_gate_sends_texts_through_the_deployed_text_pipeline(tmp_path, monkeypatch):
    from handlers.runtime.pipelines.text_embedding import TextEmbeddingRunner

    calls = _spy_on_runs(monkeypatch, TextEmbeddingRunner)
    lines = [f"sentence number {i} about the weather" for i in range(20)]
    (tmp_path / "samples.txt").write_text("\n".join(lines) + "\n")
    root = tmp_path / "artifacts"
    checkpoint = _tiny_bert(tmp_path / "tiny-bert")
    assert _run(root, str(checkpoint), "--name", "tiny", "--samples", str(tmp_path / "samples.txt")) == 0
    # Every sample batch ran through the runner twice (original and prepared), as the client's texts.
    sent = [str(text) for call in calls for text in call["text"]]
    assert sorted(sent) == sorted(lines * 2)
    assert Manifest.load(root / "tiny" / "manifest.json").validation["samples"] == len(lines)


def test_the_gate_scores_through_the_deployed_classification_pipeline(tmp_path, monkeypatch):
    import handlers.runtime.pipelines.classification as classification

    calls = _spy_on_runs(monkeypatch, classification.ClassificationRunner)
    features, labels = load_digits(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(features, labels), tmp_path / "clf.joblib")
    root = tmp_path / "artifacts"
    assert _run(root, str(tmp_path / "clf.joblib"), "--name", "clf", "--trust-pickle") == 0
    assert calls and all(set(call) == {"input"} and call["input"].shape[1] == 64 for call in calls)
    # A deployed pipeline that answers differently on the prepared model is caught by the gate: the
    # second runner built (on the prepared session) reverses its probabilities.
    built: list[object] = []
    init, run = classification.ClassificationRunner.__init__, classification.ClassificationRunner.run

    def remember(self, *args):
        init(self, *args)
        built.append(self)

    def drifting(self, inputs, outputs):
        result = run(self, inputs, outputs)
        if self is built[1]:
            result["probabilities"] = result["probabilities"][:, ::-1].copy()
        return result

    monkeypatch.setattr(classification.ClassificationRunner, "__init__", remember)
    monkeypatch.setattr(classification.ClassificationRunner, "run", drifting)
    assert _run(root, str(tmp_path / "clf.joblib"), "--name", "clf2", "--trust-pickle") == 1
    assert not (root / "clf2").exists()


def test_gate_failure_writes_nothing_and_names_the_figure(tmp_path, capsys):
    root = tmp_path / "artifacts"
    source = str(_mlp(tmp_path / "mlp.onnx"))
    code = _run(root, source, "--name", "strict", "--quantize", "dynamic", "--max-abs-error", "1e-9")
    assert code == 1
    err = capsys.readouterr().err
    assert "validation gate failed, nothing written" in err and "--max-abs-error" in err
    assert _artifact_files(root) == []


def test_auto_keeps_fp32_when_its_int8_recipe_fails_the_gate_and_says_so(tmp_path):
    root = tmp_path / "artifacts"
    source = str(_mlp(tmp_path / "mlp.onnx"))
    assert _run(root, source, "--name", "careful", "--max-abs-error", "1e-4") == 0
    quantization = Manifest.load(root / "careful" / "manifest.json").quantization
    assert quantization["method"] == "none" and quantization["recipe"] == "auto"
    assert quantization["reason"].startswith(
        "auto chose dynamic quantization, which failed the validation gate (max abs error"
    )
    assert quantization["reason"].endswith("kept fp32")


def test_atomic_under_a_failure_mid_write(tmp_path, monkeypatch):
    import onnxfn.prepare.report as report

    def boom(*_, **__):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(report, "write_report", boom)
    root = tmp_path / "artifacts"
    with pytest.raises(OSError, match="simulated"):
        _run(root, str(_mlp(tmp_path / "mlp.onnx")), "--name", "half", "--quantize", "none")
    assert _artifact_files(root) == []


def _no_inputs(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(np.ones(3, np.float32)))],
        "constant",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    return path


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (
            lambda d: (d / "bad.onnx").write_bytes(_mlp(d / "ok.onnx").read_bytes()[:200]) and d / "bad.onnx",
            [],
            "is not a valid ONNX model",
        ),
        (lambda d: _no_inputs(d / "none.onnx"), [], "the model has no inputs"),
        (
            lambda d: _mlp(d / "dyn.onnx", dims=["batch", "features"]),
            [],
            "has a dynamic dimension besides its batch axis",
        ),
        (lambda d: (d / "notes.txt").write_text("hi") and d / "notes.txt", [], "unsupported source type .txt"),
        (lambda d: d / "missing.onnx", [], "does not exist"),
        (lambda d: _mlp(d / "mlp.onnx"), ["--quantize", "static"], "static quantization needs a calibration set"),
    ],
    ids=["truncated-onnx", "no-inputs", "dynamic-dims", "unsupported", "missing", "static-without-calibration"],
)
def test_bad_input_is_one_clear_line_and_nothing_written(tmp_path, capsys, make, extra, message):
    root = tmp_path / "artifacts"
    source = make(tmp_path)
    assert _run(root, str(source), "--name", "bad", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) <= 3  # one message (rich may wrap a long line)
    assert _artifact_files(root) == []


def test_calibration_of_the_wrong_shape(tmp_path, capsys):
    np.save(tmp_path / "calib.npy", np.zeros((10, 15), np.float32))
    root = tmp_path / "artifacts"
    code = _run(
        root,
        str(_mlp(tmp_path / "mlp.onnx")),
        "--name",
        "cal",
        "--quantize",
        "static",
        "--calibration",
        str(tmp_path / "calib.npy"),
    )
    assert code == 2
    assert "calibration data" in capsys.readouterr().err
    assert _artifact_files(root) == []


def test_existing_name_needs_force(tmp_path, capsys):
    root = tmp_path / "artifacts"
    source = str(_mlp(tmp_path / "mlp.onnx"))
    assert _run(root, source, "--name", "twice", "--quantize", "none") == 0
    before = (root / "twice" / "manifest.json").read_bytes()
    assert _run(root, source, "--name", "twice", "--quantize", "none") == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (root / "twice" / "manifest.json").read_bytes() == before
    assert _run(root, source, "--name", "twice", "--force", "--max-rel-error", "0.25") == 0
    assert Manifest.load(root / "twice" / "manifest.json").quantization["method"] == "dynamic"


def test_the_manifest_is_strict_json_and_progress_is_plain_lines_off_a_terminal(tmp_path, capsys):
    root = tmp_path / "artifacts"
    # --max-abs-error is off by default (an infinite threshold), which JSON cannot spell
    assert _run(root, str(_mlp(tmp_path / "mlp.onnx")), "--name", "mlp", "--max-rel-error", "0.25") == 0

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    document = json.loads((root / "mlp" / "manifest.json").read_text(), parse_constant=refuse)
    assert document["validation"]["thresholds"]["max_abs_error"] is None
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("onnxfn add mlp: ")]
    assert any("quantizing" in line for line in steps) and any("validating" in line for line in steps)
    assert all(re.search(r"\(\d+\.\d s\)$", line) for line in steps)

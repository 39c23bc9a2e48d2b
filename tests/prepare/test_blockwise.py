"""``--quantize blockwise``: MatMul weights as 4- or 8-bit blocks (MatMulNBits), embedding tables by rows
or in 4-bit blocks, on tiny real models run by onnxruntime."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxfn.prepare.blockwise import BlockOptions, embedding_gathers
from onnxfn.prepare.quantization import QuantizationError, quantize

VOCAB, WIDTH, OUT = 2000, 128, 256


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ids -> Gather(table [2000, 128]) -> MatMul(w1 [128, 256]) -> Relu -> MatMul(w2 [256, 128])."""
    rng = np.random.default_rng(3)
    weights = {
        "table": rng.normal(0, 1.0, (VOCAB, WIDTH)),
        "w1": rng.normal(0, 0.1, (WIDTH, OUT)),
        "w2": rng.normal(0, 0.1, (OUT, WIDTH)),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["e"], name="embed", axis=0),
            helper.make_node("MatMul", ["e", "w1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ],
        "embedder",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", WIDTH])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("embedder") / "embedder.onnx"
    onnx.save_model(model, str(path))
    return path


def _run(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(4).integers(0, VOCAB, (4, 16)).astype(np.int64)
    return np.asarray(session.run(None, {"ids": ids})[0])


def _error(src: Path, dst: Path) -> float:
    expected, got = _run(src), _run(dst)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def _attributes(path: Path, op_type: str) -> list[dict[str, int]]:
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == op_type]
    return [{a.name: a.i for a in n.attribute} for n in nodes]


def test_8_bit_blocks_and_int8_rows_by_default(embedder: Path, tmp_path: Path) -> None:
    dst = tmp_path / "q.onnx"
    facts = quantize(embedder, dst, "blockwise")

    assert _ops(dst).count("MatMulNBits") == 2 and "MatMul" not in _ops(dst)
    assert all(
        a["bits"] == 8 and a["block_size"] == 128 and a["accuracy_level"] == 4 for a in _attributes(dst, "MatMulNBits")
    )
    # the table is int8 with a scale per row; no fp32 weight is left
    kept = {t.name: t.data_type for t in onnx.load(str(dst)).graph.initializer}
    assert kept["table_int8"] == TensorProto.INT8 and "table" not in kept
    assert facts["quantized_nodes"] == 2 and facts["embedding_nodes"] == ["embed"]
    assert facts["embeddings"] == "1 table(s) in int8, one symmetric fp32 scale per row"
    assert facts["activation_type"].startswith("int8, one scale per block")
    assert facts["quantized_bytes"] / facts["original_bytes"] < 0.3
    assert _error(embedder, dst) < 0.03


def test_4_bit_blocks_are_smaller_and_further_off(embedder: Path, tmp_path: Path) -> None:
    eight, four = tmp_path / "8.onnx", tmp_path / "4.onnx"
    quantize(embedder, eight, "blockwise", block=BlockOptions(block_size=32))
    facts = quantize(embedder, four, "blockwise", block=BlockOptions(bits=4, block_size=32))

    assert {a["bits"] for a in _attributes(four, "MatMulNBits")} == {4}
    assert four.stat().st_size < eight.stat().st_size
    assert facts["bits"] == 4 and facts["weight_type"].startswith("int4")
    assert _error(embedder, eight) < _error(embedder, four) < 0.2


def test_int4_embeddings_use_gather_block_quantized(embedder: Path, tmp_path: Path) -> None:
    dst = tmp_path / "q.onnx"
    facts = quantize(embedder, dst, "blockwise", block=BlockOptions(embeddings="int4", block_size=32))

    assert "GatherBlockQuantized" in _ops(dst)
    assert "GatherBlockQuantized" in facts["embeddings"] and facts["embedding_nodes"] == ["embed"]
    assert facts["opset_raised"] == "opset 17 to 21, IR version to 10, for int4 tensors"
    assert [o.version for o in onnx.load(str(dst)).opset_import if o.domain == ""] == [21]
    assert _error(embedder, dst) < 0.2


def test_fp32_embeddings_and_excluded_nodes_stay_float(embedder: Path, tmp_path: Path) -> None:
    dst = tmp_path / "q.onnx"
    facts = quantize(embedder, dst, "blockwise", exclude_nodes=["fc2"], block=BlockOptions(embeddings="fp32"))

    kept = {t.name: t.data_type for t in onnx.load(str(dst)).graph.initializer}
    assert kept["table"] == TensorProto.FLOAT and kept["w2"] == TensorProto.FLOAT
    assert _ops(dst).count("MatMulNBits") == 1 and _ops(dst).count("MatMul") == 1
    assert facts["quantized_nodes"] == 1 and facts["embedding_nodes"] == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (BlockOptions(bits=3), "--bits 3: expected one of 4, 8"),
        (BlockOptions(block_size=48), "--block-size 48: expected a power of two ≥ 16"),
        (BlockOptions(block_size=8), "--block-size 8: expected a power of two ≥ 16"),
        (BlockOptions(accuracy_level=5), "--accuracy-level 5: expected 0 to 4"),
        (BlockOptions(embeddings="int2"), "--embeddings 'int2': expected one of int8, int4, fp32"),
    ],
)
def test_bad_options_name_the_flag_and_write_nothing(
    options: BlockOptions, message: str, embedder: Path, tmp_path: Path
) -> None:
    with pytest.raises(QuantizationError, match=message.replace("(", r"\(")):
        quantize(embedder, tmp_path / "out" / "q.onnx", "blockwise", block=options)
    assert not (tmp_path / "out").exists()


def test_the_quantizer_leaves_the_root_logger_as_it_was(
    embedder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in `onnxfn add` run from a shell: no handler on the root logger, the quantizer not imported yet.
    # On import it calls logging.basicConfig(level=INFO), which would then add one and lower the level.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)
    monkeypatch.delitem(sys.modules, "onnxruntime.quantization.matmul_nbits_quantizer", raising=False)
    quantize(embedder, tmp_path / "q.onnx", "blockwise")
    assert root.handlers == [] and root.level == logging.WARNING
    assert logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").level == logging.ERROR


def test_a_table_read_by_more_than_its_lookup_stays_fp32(embedder: Path, tmp_path: Path) -> None:
    model = onnx.load(str(embedder))
    # tie the table to an output projection, as language models do: y @ table^T
    model.graph.node.extend([helper.make_node("MatMul", ["e", "table_t"], ["logits"], name="tied")])
    model.graph.node.insert(0, helper.make_node("Transpose", ["table"], ["table_t"], name="transpose", perm=[1, 0]))
    model.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))
    src = tmp_path / "tied.onnx"
    onnx.save(model, str(src))
    facts = quantize(src, tmp_path / "q.onnx", "blockwise")
    assert facts["embedding_nodes"] == [] and facts["embeddings"].startswith("none quantized")
    kept = {t.name: t.data_type for t in onnx.load(str(tmp_path / "q.onnx")).graph.initializer}
    assert kept["table"] == TensorProto.FLOAT


def test_embedding_gathers_are_row_lookups_of_2d_float_tables(embedder: Path) -> None:
    model = onnx.load(str(embedder))
    assert embedding_gathers(model) == ["embed"]
    assert embedding_gathers(model, ["embed"]) == []
    model.graph.node[0].attribute[0].i = 1  # a Gather on axis 1 picks columns: not an embedding
    assert embedding_gathers(model) == []

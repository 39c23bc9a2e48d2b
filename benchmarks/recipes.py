"""MiniLM-L6-v2 under each quantization recipe ``onnxfn add`` offers, and pruned at several fractions.

Every row is an artifact ``add_model`` wrote from the all-MiniLM-L6-v2 checkpoint (converted,
pruned, quantized, pre-optimized: what deploys), built with the gate's thresholds at zero so that
every recipe is measured; whether the real gate would have passed it is judged afterwards on the
figures it recorded (cosine against the fp32 export on the validation sentences, where pruning
also ranked its neurons). Then, on this machine, in one run:

- size, and ``session.run`` latency at batch 8 × 128 tokens on 1 and 2 threads: medians over
  rounds that take every artifact in turn, so drift of a shared machine hits them alike;
- cosine of the mean-pooled sentence embeddings against the fp32 export (112 sentences: the
  validation sentences and the held-out fixture's) and against the original sentence-transformers
  model (``tests/fixtures/minilm_reference.npz``: 64 held-out sentences, embeddings from PyTorch).

Writes ``benchmarks/results/recipes.json`` and ``recipes.png``; ``make bench`` runs it as the
``recipes`` step, ``make recipes`` alone (dev venv: none of these is a cold-start figure).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.recipe_tables import DEFAULT, PREVIOUS
from benchmarks.records import Record, StepResult
from benchmarks.timing import ROOT

RESULTS = ROOT / "benchmarks" / "results"
FIXTURE = ROOT / "tests" / "fixtures" / "minilm_reference.npz"
MB = 1e6
PRUNE_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.3)
HEAD_FRACTIONS = (1 / 12, 2 / 12, 3 / 12)  # MiniLM has 12 heads a layer: one, two, three of them


@dataclass(frozen=True)
class Recipe:
    label: str
    quantize: str
    block: dict[str, Any] = field(default_factory=dict)
    prune: float | None = None
    prune_heads: float | None = None


RECIPES = (
    Recipe("fp32", "none"),
    Recipe("fp16", "fp16"),
    Recipe(PREVIOUS, "dynamic"),
    Recipe(DEFAULT, "blockwise"),
    Recipe("blockwise 8-bit, blocks of 32", "blockwise", {"block_size": 32}),
    Recipe("blockwise 4-bit, blocks of 32", "blockwise", {"bits": 4, "block_size": 32}),
    Recipe("blockwise 8-bit, blocks of 128, int4 embeddings", "blockwise", {"embeddings": "int4"}),
    Recipe(
        "blockwise 4-bit, blocks of 32, int4 embeddings",
        "blockwise",
        {"bits": 4, "block_size": 32, "embeddings": "int4"},
    ),
)


def _build(recipe: Recipe, index: int, root: Path) -> tuple[Path, dict[str, Any]]:
    from onnxfn.demo_models import DEMO_TIMING, minilm_checkpoint
    from onnxfn.prepare.add import AddOptions, add_model
    from onnxfn.prepare.validation import Thresholds

    name = f"recipe{index}"
    options = AddOptions(
        quantize=recipe.quantize,
        block=dict(recipe.block),
        prune=recipe.prune,
        prune_heads=recipe.prune_heads,
        force=True,
        thresholds=Thresholds(min_cosine_mean=0.0, min_cosine_min=0.0),
        **DEMO_TIMING,
    )
    manifest = add_model(minilm_checkpoint(), name, options, root=root).manifest
    facts: dict[str, Any] = {"drift": dict(manifest.validation["drift"]) if manifest.validation else {}}
    if manifest.pruning and "kept_neurons" in manifest.pruning:
        facts["neurons"] = {"kept": manifest.pruning["kept_neurons"], "of": manifest.pruning["neurons"]}
    if manifest.pruning and "heads" in manifest.pruning:
        heads = manifest.pruning["heads"]
        facts["heads"] = {"kept": heads["kept_heads"], "of": heads["heads"]}
    return root / name / "model.onnx", facts


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(session: Any, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    names = {i.name for i in session.get_inputs()}
    every = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {k: v for k, v in every.items() if k in names}


def _latencies(paths: dict[str, Path], threads: int, rounds: int, per_round: int) -> dict[str, list[float]]:
    """Milliseconds per ``session.run`` of batch 8 × 128, every artifact in each round in turn."""
    ids = np.random.default_rng(0).integers(1000, 20000, (8, 128)).astype(np.int64)
    sessions = {label: _session(path, threads) for label, path in paths.items()}
    feeds = {label: _feeds(s, ids, np.ones_like(ids)) for label, s in sessions.items()}
    for label, session in sessions.items():
        for _ in range(2):
            session.run(None, feeds[label])
    samples: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(rounds):
        for label, session in sessions.items():
            for _ in range(per_round):
                started = time.perf_counter()
                session.run(None, feeds[label])
                samples[label].append((time.perf_counter() - started) * 1000)
    return samples


def _embeddings(path: Path, sentences: list[str], tokenizer: Any) -> np.ndarray:
    session = _session(path, 2)
    out = []
    for start in range(0, len(sentences), 16):
        encodings = tokenizer.encode_batch(sentences[start : start + 16])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (hidden,) = session.run(["last_hidden_state"], _feeds(session, ids, mask))
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def _gate(drift: dict[str, float]) -> bool:
    from onnxfn.prepare.validation import DEFAULT_THRESHOLDS

    return bool(
        drift.get("cosine_min", 0) >= DEFAULT_THRESHOLDS.min_cosine_min
        and drift.get("cosine_mean", 0) >= DEFAULT_THRESHOLDS.min_cosine_mean
    )


def run(quick: bool = False) -> dict[str, Any]:
    """Build every row, measure it, and return the results (also written to ``recipes.json``)."""
    from tokenizers import Tokenizer

    from onnxfn.demo_models import minilm_checkpoint
    from onnxfn.prepare.sentences import SENTENCES

    fixture = np.load(FIXTURE)
    held_out = [str(s) for s in fixture["sentences"]]
    tokenizer = Tokenizer.from_file(str(minilm_checkpoint() / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=int(fixture["max_seq_length"]))
    tokenizer.enable_padding()
    rows = list(RECIPES)
    fractions = PRUNE_FRACTIONS[:2] if quick else PRUNE_FRACTIONS
    rows += [Recipe(f"pruned {f:g}, then the default", "blockwise", prune=f) for f in fractions]
    rows += [
        Recipe(f"heads pruned {h:g}, then the default", "blockwise", prune_heads=h)
        for h in (HEAD_FRACTIONS[:1] if quick else HEAD_FRACTIONS)
    ]
    with tempfile.TemporaryDirectory(prefix="onnxfn-recipes-") as tmp:
        built = {r.label: _build(r, i, Path(tmp)) for i, r in enumerate(rows)}
        paths = {label: path for label, (path, _) in built.items()}
        rounds, per_round = (2, 2) if quick else (5, 3)
        latency = {t: _latencies(paths, t, rounds, per_round) for t in (1, 2)}
        fp32_all = _embeddings(paths["fp32"], SENTENCES + held_out, tokenizer)
        results: dict[str, Any] = {"rows": [], "sentences": len(SENTENCES) + len(held_out), "held_out": len(held_out)}
        fp32_bytes = paths["fp32"].stat().st_size
        for recipe in rows:
            path, facts = paths[recipe.label], built[recipe.label][1]
            mine = _embeddings(path, SENTENCES + held_out, tokenizer)
            vs_fp32 = np.sum(mine * fp32_all, axis=1)
            vs_original = np.sum(mine[len(SENTENCES) :] * fixture["embeddings"], axis=1)
            results["rows"].append(
                {
                    "recipe": recipe.label,
                    "quantize": recipe.quantize,
                    "block": recipe.block,
                    "prune": recipe.prune,
                    "prune_heads": recipe.prune_heads,
                    "heads": facts.get("heads"),
                    "bytes": path.stat().st_size,
                    "size_ratio": path.stat().st_size / fp32_bytes,
                    "latency_ms": {str(t): statistics.median(latency[t][recipe.label]) for t in (1, 2)},
                    "runs": len(latency[1][recipe.label]),
                    "cosine_vs_fp32": {"min": float(vs_fp32.min()), "mean": float(vs_fp32.mean())},
                    "cosine_vs_original": {"min": float(vs_original.min()), "mean": float(vs_original.mean())},
                    "gate_drift": facts["drift"],
                    "neurons": facts.get("neurons"),
                    "gate_passes": _gate(facts["drift"]),
                }
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "recipes.json").write_text(json.dumps(results, indent=2) + "\n")
    _plot(results)
    return results


def measure(quick: bool) -> StepResult:
    """The suite's ``recipes`` step: one record a row, the 1-thread latency as its median."""
    data = run(quick)
    result = StepResult(data={"recipes": data})
    rows = {row["recipe"]: row for row in data["rows"]}
    previous = rows[PREVIOUS]
    for row in data["rows"]:
        record = Record(
            name=row["recipe"],
            model="minilm",
            variant="b8×128, 1 thread",
            metric="recipe",
            median=row["latency_ms"]["1"],
            p90=None,
            unit="ms",
            runs=row["runs"],
            extra={k: v for k, v in row.items() if k not in ("recipe", "runs")},
        )
        record.ratios["previous default"] = row["latency_ms"]["1"] / previous["latency_ms"]["1"]
        record.ratios["fp32 bytes"] = row["size_ratio"]
        result.records.append(record)
    result.notes.append(
        "recipes: benchmarks/recipes.py (artifacts written by onnxfn add; dev venv session.run, medians of rounds "
        "taking every artifact in turn; cosine vs the fp32 export and vs sentence-transformers' embeddings)"
    )
    return result


def _plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for row in rows:
        pruned = row["prune"] is not None or row.get("prune_heads") is not None
        left.scatter(row["size_ratio"], row["cosine_vs_original"]["min"], marker="^" if pruned else "o")
        left.annotate(
            row["recipe"].split(",")[0] if not pruned else row["recipe"].split(",")[0].replace("pruned ", "prune "),
            (row["size_ratio"], row["cosine_vs_original"]["min"]),
            fontsize=7,
        )
    left.axhline(0.985, color="red", linestyle="--", label="gate: cosine min 0.985")
    left.axvline(0.26, color="grey", linestyle=":", label="size target 0.26×")
    left.set_xlabel("size, × fp32")
    left.set_ylabel("cosine min vs sentence-transformers")
    left.set_title("MiniLM-L6-v2: size against accuracy")
    left.legend(fontsize=7)
    labels = [row["recipe"] for row in rows if row["prune"] is None and row.get("prune_heads") is None]
    x = np.arange(len(labels))
    one = [next(r for r in rows if r["recipe"] == label)["latency_ms"]["1"] for label in labels]
    two = [next(r for r in rows if r["recipe"] == label)["latency_ms"]["2"] for label in labels]
    right.barh(x - 0.2, one, 0.4, label="1 thread")
    right.barh(x + 0.2, two, 0.4, label="2 threads")
    right.set_yticks(x, [label[:42] for label in labels], fontsize=7)
    right.set_xlabel("ms, batch 8 × 128 tokens (median)")
    right.set_title("session.run latency")
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(RESULTS / "recipes.png", dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and pruning fractions")
    outcome = run(parser.parse_args().quick)
    for entry in outcome["rows"]:
        print(
            f"{entry['recipe']:58s} {entry['bytes'] / MB:6.1f} MB {entry['size_ratio']:.3f}×"
            f"  1 thr {entry['latency_ms']['1']:6.1f} ms  2 thr {entry['latency_ms']['2']:6.1f} ms"
            f"  vs fp32 {entry['cosine_vs_fp32']['min']:.4f}/{entry['cosine_vs_fp32']['mean']:.4f}"
            f"  vs original {entry['cosine_vs_original']['min']:.4f}/{entry['cosine_vs_original']['mean']:.4f}"
            f"  gate {'PASS' if entry['gate_passes'] else 'FAIL'}"
        )

"""What quantization costs and buys for ``minilm``, as ``onnxfn add`` reported it (not re-measured).

Read from ``model_artifacts/minilm/manifest.json`` (the quantization facts and the validation
figures of the build: size, median latency of the original and prepared model at batch 1 and 8 on
1 and 2 threads, cosine drift over its validation sentences). Every recipe, measured side by side
in the run, is the ``recipes`` step (``benchmarks/recipes.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.lambda_env import ARTIFACTS
from benchmarks.records import Record, StepResult
from benchmarks.timing import ROOT

MB = 1e6  # as the quantization report counts


def _fact(name: str, variant: str, metric: str, value: float, unit: str, source: Path, **extra: Any) -> Record:
    return Record(
        name=name,
        model="minilm",
        variant=variant,
        metric=metric,
        median=value,
        p90=None,
        unit=unit,
        runs=None,
        extra={"source": str(source.relative_to(ROOT)), "measured_in_this_run": False, **extra},
    )


def measure(quick: bool) -> StepResult:
    result = StepResult()
    path = ARTIFACTS / "minilm" / "manifest.json"
    manifest = json.loads(path.read_text())
    validation = manifest.get("validation", {})
    facts = manifest.get("quantization", {})
    original, prepared = validation.get("original_bytes"), validation.get("prepared_bytes")
    if original and prepared:
        fp32 = _fact("fp32", "exported checkpoint", "artifact size", original / MB, "MB", path)
        int8 = _fact("onnxfn add (default)", "artifact", "artifact size", prepared / MB, "MB", path)
        int8.ratios["fp32"] = prepared / original
        result.records += [fp32, int8]
    latency = validation.get("latency_ms", {})
    for threads in ("1", "2"):
        for batch in ("1", "8"):
            before = latency.get("original", {}).get(threads, {}).get(batch)
            after = latency.get("prepared", {}).get(threads, {}).get(batch)
            if before and after:
                variant = f"b{batch}, {threads} thread(s), validation sentences"
                record = _fact("onnxfn add (default)", variant, "session.run latency", after, "ms", path)
                record.ratios["fp32"] = after / before
                result.records += [_fact("fp32", variant, "session.run latency", before, "ms", path), record]
    drift = validation.get("drift", {})
    samples = validation.get("samples")
    for key in ("cosine_mean", "cosine_min"):
        if key in drift:
            result.records.append(
                _fact(
                    "onnxfn add (default)", f"vs fp32, {samples} samples", key.replace("_", " "), drift[key], "", path
                )
            )
    result.data["quantization"] = {k: v for k, v in facts.items() if k != "excluded_nodes"}
    result.data["quantization"]["excluded_nodes"] = len(facts.get("excluded_nodes", []))
    result.notes.append(
        "quantization: figures read from onnxfn add's report (manifest.json); not re-measured in this run"
    )
    return result

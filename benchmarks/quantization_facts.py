"""What quantization costs and buys for ``minilm``, as ``onnxfn add`` reported it (not re-measured).

Read from ``model_artifacts/minilm/manifest.json`` (the quantization facts and the validation
figures of the build: size, median latency of the original and prepared model at batch 1 and 8 on
1 and 2 threads, cosine drift over its validation sentences) and from
``benchmarks/results/quantization.json`` (``python -m benchmarks.quantization``: batch 8 × 128 tokens,
112 sentences), whose date is given. The quantization search is not run again here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from benchmarks.lambda_env import ARTIFACTS
from benchmarks.records import Record, StepResult
from benchmarks.timing import ROOT

QUANTIZATION_JSON = ROOT / "benchmarks" / "results" / "quantization.json"
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
        int8 = _fact("int8 (onnxfn add)", "artifact", "artifact size", prepared / MB, "MB", path)
        int8.ratios["fp32"] = prepared / original
        result.records += [fp32, int8]
    latency = validation.get("latency_ms", {})
    for threads in ("1", "2"):
        for batch in ("1", "8"):
            before = latency.get("original", {}).get(threads, {}).get(batch)
            after = latency.get("prepared", {}).get(threads, {}).get(batch)
            if before and after:
                variant = f"b{batch}, {threads} thread(s), validation sentences"
                record = _fact("int8 (onnxfn add)", variant, "session.run latency", after, "ms", path)
                record.ratios["fp32"] = after / before
                result.records += [_fact("fp32", variant, "session.run latency", before, "ms", path), record]
    drift = validation.get("drift", {})
    samples = validation.get("samples")
    for key in ("cosine_mean", "cosine_min"):
        if key in drift:
            result.records.append(
                _fact("int8 (onnxfn add)", f"vs fp32, {samples} samples", key.replace("_", " "), drift[key], "", path)
            )
    if QUANTIZATION_JSON.exists():
        data = json.loads(QUANTIZATION_JSON.read_text())
        when = time.strftime("%Y-%m-%d", time.localtime(QUANTIZATION_JSON.stat().st_mtime))
        for threads in ("1", "2"):
            fp32_ms = data["latency_b8_s128_ms"]["fp32"][threads]
            int8_ms = data["latency_b8_s128_ms"]["int8"][threads]
            variant = f"b8×128, {threads} thread(s)"
            record = _fact("int8 (onnxfn add)", variant, "session.run latency", int8_ms, "ms", QUANTIZATION_JSON)
            record.ratios["fp32"] = int8_ms / fp32_ms
            record.extra["date"] = when
            base = _fact("fp32", variant, "session.run latency", fp32_ms, "ms", QUANTIZATION_JSON, date=when)
            result.records += [base, record]
        for key in ("cosine_vs_fp32_mean", "cosine_vs_fp32_min"):
            variant = f"vs fp32, {data['sentences']} sentences"
            metric = key.replace("_vs_fp32_", " ")
            result.records.append(
                _fact("int8 (onnxfn add)", variant, metric, data[key], "", QUANTIZATION_JSON, date=when)
            )
    result.data["quantization"] = {k: v for k, v in facts.items() if k != "excluded_nodes"}
    result.data["quantization"]["excluded_nodes"] = len(facts.get("excluded_nodes", []))
    result.notes.append(
        "quantization: figures read from onnxfn add's report (manifest.json) and benchmarks/results/quantization.json;"
        " not re-measured in this run"
    )
    return result

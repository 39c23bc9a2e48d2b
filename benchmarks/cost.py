"""USD per million requests of each demo model's function at 512 / 1,024 / 1,769 / 3,008 MB.

From the faithful figures of the cold-start step (``cold_start.py``: the function's runtime, code
and layer, the memory's CPU share as a cgroup quota) at each memory size:

- warm: the median warm request (batch 1, JSON; the median of a few warm requests in each fresh
  process, then the median over processes), billed per started millisecond;
- cold start: since 1 August 2025 Lambda bills the init phase of on-demand functions too, so a cold
  request is billed for init + its invocation: spawn → first response (the interpreter's start is
  part of Lambda's Init Duration), per started millisecond.

x86_64 only (no arm64 host here); API Gateway, S3, data transfer and CloudWatch are not included.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.records import Record, find

# AWS Lambda pricing, us-east-1, x86_64, first pricing tier (https://aws.amazon.com/lambda/pricing/).
PRICE_PER_GB_S = 0.0000166667  # USD per GB-second of billed duration
PRICE_PER_REQUEST = 0.20 / 1_000_000  # USD per request ($0.20 per 1M)
# Init billed for on-demand functions since 2025-08-01 (AWS Compute Blog, "AWS Lambda standardizes
# billing for INIT Phase", April 2025).
INIT_BILLED_SINCE = "2025-08-01"
MEMORY_SIZES_MB = (512, 1024, 1769, 3008)
MB_PER_VCPU = 1769
MODELS = ("digits", "minilm")
PRICES_TEXT = (
    "AWS Lambda us-east-1 x86_64 prices (aws.amazon.com/lambda/pricing): $0.0000166667 per GB-s, "
    "$0.20 per million requests; a cold request is billed for init + invocation (init billed since 1 August 2025)"
)


def usd_per_million(memory_mb: int, duration_ms: float) -> float:
    """USD for one million requests of ``duration_ms`` each at ``memory_mb`` (billed per started ms)."""
    billed_s = math.ceil(duration_ms) / 1000
    return (billed_s * (memory_mb / 1024) * PRICE_PER_GB_S + PRICE_PER_REQUEST) * 1_000_000


def derive(records: list[Record]) -> tuple[list[Record], dict[str, Any]]:
    """Cost records (warm and cold start) for every model and memory size measured in this run."""
    out: list[Record] = []
    table: dict[str, Any] = {}
    for model in MODELS:
        for memory_mb in MEMORY_SIZES_MB:
            warm, cold = warm_record(records, model, memory_mb), cold_record(records, model, memory_mb)
            row: dict[str, Any] = {}
            for kind, figure in (("warm", warm), ("cold start", cold)):
                if figure is None or figure.median is None:
                    continue
                usd = usd_per_million(memory_mb, figure.median)
                row[kind] = {"duration_ms": figure.median, "billed_ms": math.ceil(figure.median), "usd": usd}
                out.append(
                    Record(
                        name="onnxfn",
                        model=model,
                        variant=f"{memory_mb} MB {kind}",
                        metric="cost",
                        median=usd,
                        p90=None,
                        unit="USD per 1M requests" if kind == "warm" else "USD per 1M cold starts",
                        runs=figure.runs,
                        extra={"duration_ms": figure.median, "billed_ms": math.ceil(figure.median)},
                    )
                )
            if row:
                table.setdefault(model, {})[str(memory_mb)] = row
    return out, table


def warm_record(records: list[Record], model: str, memory_mb: int) -> Record | None:
    """onnxfn's faithful warm latency at ``memory_mb`` (batch 1, JSON)."""
    return find(
        records, name="onnxfn", model=model, metric="warm latency (faithful)", variant=f"b1 JSON, {memory_mb} MB"
    )


def cold_record(records: list[Record], model: str, memory_mb: int) -> Record | None:
    """The cold start at ``memory_mb`` with the run's init-burst setting (the configured memory also
    has the other setting; the other sizes only this one)."""
    for record in records:
        if record.name == "onnxfn" and record.model == model and record.metric == "cold start":
            extra = record.extra
            if extra.get("memory_mb") == memory_mb and (extra.get("headline") or not extra.get("configured")):
                return record
    return None

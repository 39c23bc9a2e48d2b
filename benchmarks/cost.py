"""Estimated USD per million requests for ``minilm`` per memory size and architecture.

From the warm handler durations measured in this run (JSON, batch 1 × 32 tokens and 8 × 128
tokens) at 1 vCPU (1 thread, one core) and 2 vCPUs (2 threads, two cores), with Lambda's published
us-east-1 prices. Assumptions, stated with the table:

- Lambda gives CPU in proportion to memory: 1,769 MB = 1 vCPU. Below it, a CPU-bound request
  takes the 1-vCPU duration × 1,769 / memory. At 3,008 MB (1.70 vCPUs) onnxfn runs 2 intra-op
  threads: the 2-vCPU duration × 2 / 1.70 (two threads sharing 1.70 vCPUs).
- arm64 is assumed to take the durations measured here on x86_64 (no arm64 host is available).
- Billed duration is rounded up to the next millisecond; init (cold starts), API Gateway, S3 and
  CloudWatch are not included.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.records import Record, find

PRICE_PER_GB_S = {"x86_64": 0.0000166667, "arm64": 0.0000133334}
PRICE_PER_REQUEST = 0.20 / 1_000_000
MEMORY_SIZES_MB = (512, 1024, 1769, 3008)
MB_PER_VCPU = 1769
CASES = ("b1×32", "b8×128")
PRICES_TEXT = (
    "us-east-1 published prices: x86_64 $0.0000166667 per GB-s, arm64 $0.0000133334 per GB-s, "
    "$0.20 per million requests"
)


def duration_ms(memory_mb: int, one_vcpu_ms: float, two_vcpu_ms: float) -> float:
    """The assumed duration at ``memory_mb`` from the durations measured at 1 and 2 vCPUs."""
    vcpus = memory_mb / MB_PER_VCPU
    if vcpus <= 1:
        return one_vcpu_ms / vcpus
    threads = math.ceil(vcpus)
    return two_vcpu_ms * threads / vcpus if threads == 2 else two_vcpu_ms


def usd_per_million(memory_mb: int, duration: float, arch: str) -> float:
    billed_s = math.ceil(duration) / 1000
    per_request = billed_s * (memory_mb / 1024) * PRICE_PER_GB_S[arch] + PRICE_PER_REQUEST
    return per_request * 1_000_000


def derive(records: list[Record]) -> tuple[list[Record], dict[str, Any]]:
    """Cost records for every case whose 1- and 2-vCPU warm durations were measured in this run."""
    out: list[Record] = []
    table: dict[str, Any] = {}
    for case in CASES:
        one = find(records, name="onnxfn", model="minilm", metric="warm latency", variant=f"{case} JSON 1 vCPU")
        two = find(records, name="onnxfn", model="minilm", metric="warm latency", variant=f"{case} JSON 2 vCPU")
        if one is None or two is None or one.median is None or two.median is None:
            continue
        for memory_mb in MEMORY_SIZES_MB:
            duration = duration_ms(memory_mb, one.median, two.median)
            for arch in PRICE_PER_GB_S:
                usd = usd_per_million(memory_mb, duration, arch)
                out.append(
                    Record(
                        name="onnxfn",
                        model="minilm",
                        variant=f"{case} {memory_mb} MB {arch}",
                        metric="cost",
                        median=usd,
                        p90=None,
                        unit="USD per 1M requests",
                        runs=one.runs,
                        extra={"duration_ms": duration, "billed_ms": math.ceil(duration), "vcpus": memory_mb / 1769},
                    )
                )
                table.setdefault(case, {}).setdefault(memory_mb, {"duration_ms": duration})[arch] = usd
        table.setdefault(case, {})["measured_ms"] = {"1 vCPU": one.median, "2 vCPU": two.median}
    return out, table

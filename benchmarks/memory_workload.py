"""minilm's memory size chosen by its workload: batches of 8 paragraphs at each memory size.

The memory table of the cold-start step sends one short sentence, which fits inside one period of
the CPU quota and so barely shows the CPU share. A text model's real requests are batches of
longer texts: this step measures ``onnxfn fit minilm --batch 8`` (``onnxfn.local.fit``: the
function as Lambda runs it, the same code path ``onnxfn add`` reports) at 512 / 1,024 / 1,769 /
3,008 MB: warm latency and cost per million such requests. The demo's ``memory_mb`` for minilm
follows from it.
"""

from __future__ import annotations

from benchmarks.records import Record, StepResult
from benchmarks.timing import ROOT

MODEL = "minilm"
BATCH = 8
METRIC = "warm latency, batch of 8 paragraphs (faithful)"


def measure(quick: bool) -> StepResult:
    from onnxfn.local.fit import MEMORY_SIZES
    from onnxfn.local.fit import measure as fit

    warm_runs = 3 if quick else 10
    result = fit(ROOT / "model_artifacts" / MODEL, batch=BATCH, cold_runs=1, warm_runs=warm_runs)
    records = [
        Record(
            name="onnxfn",
            model=MODEL,
            variant=f"{row.memory_mb} MB",
            metric=METRIC,
            median=row.warm_ms,
            p90=None,
            unit="ms",
            runs=warm_runs,
            extra={
                "memory_mb": row.memory_mb,
                "vcpus": row.vcpus,
                "usd_per_million": row.warm_cost_per_million,
                "cold_start_ms": row.cold_start_ms,
                "cpu": row.cpu,
                "batch": BATCH,
            },
        )
        for row in result.rows
    ]
    assert [r.extra["memory_mb"] for r in records] == list(MEMORY_SIZES)
    note = (
        f"memory-workload: `onnxfn fit {MODEL} --batch {BATCH}` ({result.interpreter}, {result.runtime}), "
        f"requests of {BATCH} paragraphs of about 100 tokens, {warm_runs} warm requests after one cold start per size"
    )
    return StepResult(records=records, notes=[note])

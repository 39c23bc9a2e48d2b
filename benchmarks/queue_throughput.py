"""Queue throughput: the micro-batching queue worker against one-by-one invocations and bare runs.

Reuses ``benchmarks/event_throughput.py``'s setup (``queue_contenders``): ``minilm``, an SQS
event of 10 one-sentence records. Contenders, interleaved in rounds, pinned to one core (1 vCPU):
the worker on the batch of 10 (one ``session.run``), the worker on the same records one per
invocation, a bare ``session.run`` on the batched tensors (tokenized beforehand) and bare runs one
by one. Measured with results written to moto's in-process S3 (its CPU time counts here, unlike
in Lambda), then with the S3/SQS clients stubbed (the scoring path alone: the target's case).
"""

from __future__ import annotations

from benchmarks import lambda_env
from benchmarks.records import Record, StepResult
from benchmarks.timing import interleaved, percentile

RECORDS = 10


def _throughput(name: str, variant: str, samples: list[float]) -> Record:
    median_ms = sorted(samples)[len(samples) // 2]
    return Record(
        name=name,
        model="minilm",
        variant=variant,
        metric="queue throughput",
        median=RECORDS * 1000 / median_ms,
        p90=RECORDS * 1000 / percentile(samples, 0.9),
        unit="records/s",
        runs=len(samples),
        extra={"median_ms_per_10": median_ms},
    )


def measure(quick: bool) -> StepResult:
    function_core, server_core = lambda_env.cores()
    lambda_env.pin(function_core)
    from benchmarks.event_throughput import queue_contenders

    rounds = 5 if quick else 40
    result = StepResult()
    with queue_contenders(server_core) as queue:
        for io in ("moto S3 server writes", "S3/SQS stubbed"):
            if io == "S3/SQS stubbed":
                queue.use_null_clients()
            samples = interleaved(
                {
                    "onnxfn micro-batch": queue.handler_batch,
                    "onnxfn one-by-one": queue.handler_single,
                    "bare batched": queue.bare,
                    "bare one-by-one": queue.bare_one_by_one,
                },
                rounds,
            )
            records = {name: _throughput(name, f"10 records, {io}", values) for name, values in samples.items()}
            batch = records["onnxfn micro-batch"]
            for peer in ("onnxfn one-by-one", "bare batched", "bare one-by-one"):
                batch.ratios[peer] = (batch.median or 0) / (records[peer].median or 1)
            records["bare batched"].ratios["bare one-by-one"] = (records["bare batched"].median or 0) / (
                records["bare one-by-one"].median or 1
            )
            result.records.extend(records.values())
            print(f"  queue {io} done", flush=True)
    result.notes.append(
        "queue: ratios are throughput over throughput (higher is better); p90 column = the rate at the "
        "90th-percentile time; pinned to one core, 1 intra-op thread (1,769 MB); in the development venv's process; "
        "S3 writes go to a local moto server on the other core"
    )
    return result

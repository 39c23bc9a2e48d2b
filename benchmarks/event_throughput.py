"""Throughput of the event-driven handlers (issue targets), all in one run.

* Queue worker on ``minilm``, batches of 10 records: records/s of the handler vs a bare
  ``session.run`` on the same batched tensors (tokenized beforehand) vs the same records one per
  invocation. Measured twice: with results written to moto's in-process S3, and with the S3/SQS
  clients replaced by no-op stubs (the scoring path alone: in Lambda the writes are network I/O,
  overlapped by the worker's delivery threads, not CPU).
* S3 batch on a 10,000-line JSON Lines file for ``digits``: rows/s and the process's peak RSS
  (a fresh subprocess: Python, moto holding the file, and the handler).

Run: ``.venv/bin/python -m benchmarks.event_throughput``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import statistics
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.timing import median_ms, run_python

ROOT = Path(__file__).resolve().parents[1]
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="ERROR",
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1769",
)
SENTENCES = [
    "A man is playing a guitar on stage.",
    "The stock market fell sharply on Monday after the report.",
    "Serverless inference keeps costs at zero when idle.",
    "A cat sleeps on a warm windowsill in the afternoon sun.",
    "Quantized weights make the model four times smaller.",
    "The train to the airport leaves every fifteen minutes.",
    "She wrote the report in a single long evening.",
    "Rain is expected across the north by the weekend.",
    "Embeddings map sentences to points in a vector space.",
    "Please return the library books before Friday.",
]


class _NullClient:
    """Stands in for boto3's S3/SQS clients when only the scoring path is measured."""

    def put_object(self, **_: Any) -> dict[str, Any]:
        return {}

    def send_message(self, **_: Any) -> dict[str, Any]:
        return {}


def _event(texts: list[str]) -> dict[str, Any]:
    from onnxfn.local.events import sqs_event

    messages = [
        {
            "MessageId": str(uuid.uuid4()),
            "ReceiptHandle": "r",
            "Body": json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [t]}]}),
        }
        for t in texts
    ]
    return sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:requests")


@dataclass
class QueueContenders:
    """The queue worker on one batch of 10 records, the same records one per invocation, and the bare runs."""

    handler_batch: Callable[[], None]
    handler_single: Callable[[], None]
    bare: Callable[[], None]
    bare_one_by_one: Callable[[], None]
    use_null_clients: Callable[[], None]  # from then on, S3/SQS calls are no-ops (the scoring path alone)


@contextlib.contextmanager
def queue_contenders(server_core: int | None = None) -> Iterator[QueueContenders]:
    """``minilm`` loaded into the queue worker from a local moto S3 server, ready to be timed.

    A server, not ``mock_aws``: the handlers may read S3 without botocore (the standard-library
    reader), which only an endpoint serves; ``AWS_ENDPOINT_URL`` points every client at it.
    """
    from benchmarks.lambda_env import local_s3
    from handlers.runtime.model_store import ModelStore, reset_store
    from handlers.runtime.settings import load_settings
    from onnxfn.local.context import LocalContext
    from onnxfn.local.upload import upload_artifact

    with local_s3(server_core) as server:
        s3 = server.client
        s3.create_bucket(Bucket="bench-data")
        os.environ.update({"AWS_ENDPOINT_URL": server.endpoint, "AWS_SESSION_TOKEN": "testing"})
        env = upload_artifact(s3, "bench-data", ROOT / "model_artifacts" / "minilm")
        os.environ.update({**env, "DATA_BUCKET": "bench-data"})
        store = ModelStore(load_settings(os.environ))
        reset_store(store)
        from handlers import queue_worker as worker
        from handlers.runtime import aws

        batch_event = _event(SENTENCES)
        single_events = [_event([t]) for t in SENTENCES]
        context = LocalContext()

        def handler_batch() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                response = worker.lambda_handler(batch_event, context)
            assert response == {"batchItemFailures": []}, response

        def handler_single() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                for event in single_events:
                    worker.lambda_handler(event, context)

        handler_batch()
        loaded = store.get_model()
        feeds = loaded.pipeline.tokenize(SENTENCES)  # type: ignore[attr-defined]
        session = loaded.pipeline._session  # type: ignore[attr-defined]

        def bare() -> None:
            session.run(["last_hidden_state"], feeds)

        single_feeds = [loaded.pipeline.tokenize([t]) for t in SENTENCES]  # type: ignore[attr-defined]

        def bare_one_by_one() -> None:
            for one in single_feeds:
                session.run(["last_hidden_state"], one)

        def use_null_clients() -> None:
            aws._clients.update({"s3": _NullClient(), "sqs": _NullClient()})

        yield QueueContenders(handler_batch, handler_single, bare, bare_one_by_one, use_null_clients)


def queue_worker(runs: int) -> dict[str, float]:
    results: dict[str, float] = {}
    with queue_contenders() as queue:
        for label in ("moto_s3", "no_io"):
            if label == "no_io":
                queue.use_null_clients()
            batch_ms = median_ms(queue.handler_batch, runs)
            single_ms = median_ms(queue.handler_single, max(5, runs // 3))
            bare_ms = median_ms(queue.bare, runs)
            results[f"queue_{label}_batch10_records_per_s"] = 10_000 / batch_ms
            results[f"queue_{label}_one_by_one_records_per_s"] = 10_000 / single_ms
            results[f"queue_{label}_ratio_vs_bare"] = bare_ms / batch_ms
            results[f"queue_{label}_ratio_vs_one_by_one"] = single_ms / batch_ms
        results["queue_bare_session_run_batch10_records_per_s"] = 10_000 / bare_ms
        bare_single_ms = median_ms(queue.bare_one_by_one, max(5, runs // 3))
        results["queue_bare_session_run_one_by_one_records_per_s"] = 10_000 / bare_single_ms
        results["queue_bare_batching_gain"] = bare_single_ms / bare_ms
    return results


S3_BATCH = """
import contextlib, io, json, os, resource, time
from pathlib import Path
import numpy as np
from sklearn.datasets import load_digits
from benchmarks.lambda_env import local_s3
from contract.layout import inbox_prefix, outbox_prefix
with local_s3() as server:  # a server: the handlers may read S3 without botocore
    s3 = server.client; s3.create_bucket(Bucket="bench-data")
    os.environ.update({"AWS_ENDPOINT_URL": server.endpoint, "AWS_SESSION_TOKEN": "testing"})
    from onnxfn.local.upload import upload_artifact
    env = upload_artifact(s3, "bench-data", Path("model_artifacts/digits"))
    os.environ.update({**env, "DATA_BUCKET": "bench-data"})
    pixels = load_digits().data.astype(np.float32)
    lines = [json.dumps(pixels[i % len(pixels)].tolist()) for i in range(10_000)]
    s3.put_object(Bucket="bench-data", Key=inbox_prefix("digits") + "rows.jsonl", Body="\\n".join(lines).encode())
    from handlers import s3_batch
    from onnxfn.local.context import LocalContext
    event = {"Records": [{"messageId": "m", "receiptHandle": "r", "attributes": {}, "messageAttributes": {},
             "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "arn:q", "awsRegion": "us-east-1",
             "body": json.dumps({"Records": [{"s3": {"bucket": {"name": "bench-data"},
                     "object": {"key": inbox_prefix("digits") + "rows.jsonl", "eTag": "e"}}}]})}]}
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        response = s3_batch.lambda_handler(event, LocalContext())
    seconds = time.perf_counter() - started
    summary_key = outbox_prefix("digits") + "rows.jsonl.summary.json"
    summary = json.loads(s3.get_object(Bucket="bench-data", Key=summary_key)["Body"].read())
    assert response == {"batchItemFailures": []} and summary["scored"] == 10_000, (response, summary)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent that forked this process.
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"rows_per_s": 10_000 / seconds, "seconds": seconds, "peak_rss_mb": int(hwm.split()[1]) / 1024}))
"""


def s3_batch(repeats: int = 3) -> dict[str, float]:
    samples = [json.loads(run_python(S3_BATCH)) for _ in range(repeats)]
    return {
        "s3_batch_digits_10k_rows_per_s": statistics.median(s["rows_per_s"] for s in samples),
        "s3_batch_digits_10k_seconds": statistics.median(s["seconds"] for s in samples),
        "s3_batch_digits_10k_peak_rss_mb": max(s["peak_rss_mb"] for s in samples),
    }


def main() -> None:
    results = {**queue_worker(runs=40), **s3_batch()}
    for key, value in results.items():
        print(f"{key:48s} {value:10.2f}")
    print(f"{'benchmark_process_peak_rss_mb':48s} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:10.1f}")


if __name__ == "__main__":
    main()

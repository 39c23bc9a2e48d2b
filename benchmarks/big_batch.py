"""Big batch files: a 200,000-line JSON Lines file through the Distributed Map path under ``onnxfn serve``,
at batch-worker concurrency 1 and 2, beside the small path (one invocation) on the same file.

Each run is a fresh ``onnxfn serve`` (faithful functions: the runtime's interpreter, the built layer,
the memory's CPU share) on an assembly synthesized with ``-c onnxfn:big_batch_rows=10000`` (the Map
path) or with a threshold above the file (the small path, whatever its predicted time). A run's time is
from the upload to the summary: the hand-off, the Map's reading and batching, the batches on the
workers and the assembly. Each run's counts must balance and its output must equal the small
path's byte for byte, or the step fails.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.records import Record, StepResult
from benchmarks.scale import running_serve
from benchmarks.timing import ROOT

LINES = 200_000
THRESHOLD = 10_000


def write_file(path: Path, lines: int) -> None:
    """Digits rows, one JSON array per line, every 1,000th line a record the model refuses."""
    from sklearn.datasets import load_digits

    pixels = load_digits().data.astype(np.float32)
    with path.open("w") as handle:
        for i in range(lines):
            row = pixels[i % len(pixels)].tolist()
            handle.write(json.dumps(row[:63] if i % 1000 == 999 else row) + "\n")


def run(app_dir: Path, data: Path, concurrency: int, work: Path) -> dict[str, Any]:
    """One ``onnxfn serve``: upload, wait for the summary; seconds, counts and the output's digest."""
    from onnxfn.local.client import AppClient

    with running_serve(app_dir, work, "--concurrency", str(concurrency)) as (state, _):
        client = AppClient(state)
        sent = time.perf_counter()
        key, _ = client.put_batch_file("digits", data)
        summary = client.wait_for_batch("digits", key, timeout_s=1800)
        seconds = time.perf_counter() - sent
        if summary is None:
            raise RuntimeError(f"no summary: {(work / 'serve.log').read_text()[-3000:]}")
        entry = client.model("digits")
        output = client.aws("s3").get_object(Bucket=entry["bucket"], Key=summary["output_key"])["Body"].read()
        client.close()
    return {
        "seconds": seconds,
        "summary": summary,
        "output_sha256": hashlib.sha256(output).hexdigest(),
        "output_bytes": len(output),
    }


def measure(quick: bool) -> StepResult:
    from onnxfn.local.synth import synthesize

    lines = 20_000 if quick else LINES
    result = StepResult()
    with tempfile.TemporaryDirectory(prefix="onnxfn-big-batch-") as tmp:
        folder = Path(tmp)
        data = folder / "big.jsonl"
        write_file(data, lines)
        small_app, big_app = folder / "small.out", folder / "big.out"
        synthesize(ROOT, small_app, {"onnxfn:big_batch_rows": str(lines * 10)})  # always the small path
        synthesize(ROOT, big_app, {"onnxfn:big_batch_rows": str(min(THRESHOLD, lines // 2))})
        runs = {}
        for label, app, concurrency in (("small path", small_app, 1), ("Map", big_app, 1), ("Map", big_app, 2)):
            work = folder / f"{label}-{concurrency}".replace(" ", "-")
            work.mkdir()
            runs[(label, concurrency)] = run(app, data, concurrency, work)
        small = runs[("small path", 1)]
        for (label, concurrency), measured in runs.items():
            summary = measured["summary"]
            if summary["records_in"] != summary["scored"] + summary["failed"] or summary["records_in"] != lines:
                raise RuntimeError(f"{label} at {concurrency}: counts do not balance: {summary}")
            if (label == "Map") != bool(summary.get("execution")):
                raise RuntimeError(f"{label} at {concurrency}: took the wrong path: {summary}")
            if measured["output_sha256"] != small["output_sha256"]:
                raise RuntimeError(f"{label} at {concurrency}: output differs from the small path's")
            result.records.append(
                Record(
                    name=f"{label}, {concurrency} batch worker" + ("s" if concurrency > 1 else ""),
                    model="digits",
                    variant=f"{lines:,} JSON lines",
                    metric="big batch throughput",
                    median=lines / measured["seconds"],
                    p90=None,
                    unit="records/s",
                    runs=1,
                    extra={
                        "seconds": measured["seconds"],
                        "scored": summary["scored"],
                        "failed": summary["failed"],
                        "output_bytes": measured["output_bytes"],
                        "identical_to_small_path": True,
                        "execution": summary.get("execution"),
                    },
                )
            )
        one = result.records[1]
        for record in result.records[2:]:
            record.ratios["Map, 1 batch worker"] = (record.median or 0) / (one.median or 1)
        result.records[1].ratios["small path"] = (one.median or 0) / (result.records[0].median or 1)
    result.notes.append(
        "big-batch: benchmarks/big_batch.py (onnxfn serve, faithful functions; one run per path and concurrency)"
    )
    return result

"""Peak memory of onnxfn's function per model and batch size, and the Lambda memory it needs.

Each (model, batch) runs in fresh processes (see ``benchmarks/fresh.py``): init, the model fetched
from the local S3, then three requests of that batch (JSON); the process's peak RSS (``VmHWM``) is
read at the end. Recommended memory: the next 64 MB step above peak × 1.2 (Lambda takes any size
from 128 MB to 10,240 MB in 1 MB steps; 64 MB steps keep the figure readable). ``onnxfn add``'s own
figure (from the manifest) is shown beside it.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from pathlib import Path

from benchmarks import fresh, lambda_env
from benchmarks.records import Record, StepResult
from benchmarks.workloads import BATCHES, infer_path, json_event, workload

HEADROOM = 1.2
STEP_MB = 64
REQUESTS = 3


def recommended_mb(peak_mb: float) -> int:
    """The next 64 MB step above ``peak_mb`` × 1.2, at least Lambda's 128 MB."""
    return max(128, math.ceil(peak_mb * HEADROOM / STEP_MB) * STEP_MB)


def measure(quick: bool) -> StepResult:
    function_core, server_core = lambda_env.cores()
    processes = 1 if quick else 2
    result = StepResult()
    with lambda_env.local_s3(server_core) as s3, tempfile.TemporaryDirectory(prefix="onnxfn-memory-") as tmp:
        for model in ("digits", "minilm"):
            env = lambda_env.function_environment(model, s3.upload(model), s3.endpoint)
            manifest = json.loads((lambda_env.ARTIFACTS / model / "manifest.json").read_text())
            add_says = manifest.get("validation", {}).get("lambda", {})
            for batch in BATCHES:
                item = workload(model, batch)
                event = json_event(infer_path(model), item.oip_json)
                peaks = [
                    fresh.onnxfn(env, event, Path(tmp), function_core, requests=REQUESTS)["peak_rss_mb"]
                    for _ in range(processes)
                ]
                result.records.append(
                    Record(
                        name="onnxfn",
                        model=model,
                        variant=item.label,
                        metric="peak RSS",
                        median=statistics.median(peaks),
                        p90=max(peaks),
                        unit="MB",
                        runs=len(peaks),
                        extra={
                            "batch": batch,
                            "tokens": item.tokens,
                            "recommended_memory_mb": recommended_mb(max(peaks)),
                            "onnxfn_add_recommended_memory_mb": add_says.get("recommended_memory_mb"),
                            "onnxfn_add_peak_rss_mb": add_says.get("peak_rss_mb"),
                        },
                    )
                )
                print(f"  memory {model} {item.label}: {max(peaks):.0f} MB", flush=True)
    result.notes.append(
        f"memory: peak RSS (VmHWM, MiB) of a fresh function process after init and {REQUESTS} JSON requests "
        f"of the batch, {processes} process(es) each (median; p90 column = max); recommended = next "
        f"{STEP_MB} MB step above max × {HEADROOM}"
    )
    return result

"""Peak memory of onnxfn's function per model and batch size, and the Lambda memory it needs.

Each (model, batch) runs in fresh processes of the function as Lambda runs it (``fresh.py``,
``faithful.py``: its runtime interpreter, staged code and built layer, its configured memory's CPU
share): init, the model fetched from the local S3, then three requests of that batch (JSON); the
process's peak RSS (``VmHWM``) is read at the end. Recommended memory: the next 64 MB step above
peak × 1.2 (Lambda takes any size from 128 MB to 10,240 MB in 1 MB steps; 64 MB steps keep the
figure readable). ``onnxfn add``'s own figure (from the manifest) is shown beside it.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from pathlib import Path

from benchmarks import faithful, fresh, lambda_env
from benchmarks.records import Record, StepResult
from benchmarks.workloads import BATCHES, infer_path, json_event, workload

HEADROOM = 1.2
STEP_MB = 64
REQUESTS = 3


def recommended_mb(peak_mb: float) -> int:
    """The next 64 MB step above ``peak_mb`` × 1.2, at least Lambda's 128 MB."""
    return max(128, math.ceil(peak_mb * HEADROOM / STEP_MB) * STEP_MB)


def measure(quick: bool, init_burst: bool = True) -> StepResult:
    _, server_core = lambda_env.cores()
    processes = 1 if quick else 2
    configs = faithful.function_configs()
    result = StepResult()
    with lambda_env.local_s3(server_core) as s3, tempfile.TemporaryDirectory(prefix="onnxfn-memory-") as tmp:
        work = Path(tmp)
        runtimes: dict[str, faithful.Runtime] = {}
        for model in ("digits", "minilm"):
            config = configs[model]
            if config.runtime not in runtimes:
                runtimes[config.runtime] = faithful.prepare(config.runtime, work, init_burst=init_burst, plain=False)
            launch = fresh.Launch(runtimes[config.runtime], config.memory_mb, init_burst, work)
            runtime = runtimes[config.runtime]
            env = lambda_env.function_environment(
                model,
                s3.upload(model),
                s3.endpoint,
                runtime.code_dir,
                config.memory_mb,
                config.load_mode,
                config.runtime,
            )
            manifest = json.loads((lambda_env.ARTIFACTS / model / "manifest.json").read_text())
            add_says = manifest.get("validation", {}).get("lambda", {})
            for batch in BATCHES:
                item = workload(model, batch)
                event = json_event(infer_path(model), item.oip_json)
                runs = [
                    fresh.onnxfn(launch, env, event, config.timeout_s, warm=REQUESTS - 1, name=f"memory-{model}")
                    for _ in range(processes)
                ]
                peaks = [run["peak_rss_mb"] for run in runs]
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
        f"memory: peak RSS (VmHWM, MiB) of a fresh function process (its runtime, code and layer, at its configured "
        f"memory) after init and {REQUESTS} JSON requests "
        f"of the batch, {processes} process(es) each (median; p90 column = max); recommended = next "
        f"{STEP_MB} MB step above max × {HEADROOM}"
    )
    return result

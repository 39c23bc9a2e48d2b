"""Cold start: a fresh process to its first successful response, model fetched from a local S3.

onnxfn's handler (``handlers/api.py``), the tutorial handler and the floor (import onnxruntime,
read the artifact from local disk, create the session, one run), each in a new ``python -c``
process (see ``benchmarks/fresh.py`` for the phases), on the batch-1 request of each model, in
interleaved rounds (onnxfn, tutorial, floor; digits, then minilm). The local S3 is a moto server in
this process, on the other core. One untimed round first warms the disk cache.

Init alone is the import phase: ``import handlers.api`` for onnxfn (its model loads lazily, on the
first request), the tutorial's libraries (its Lambda init also downloads and creates the session).
``python -X importtime`` shows where onnxfn's init goes.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import fresh, lambda_env
from benchmarks.records import Record, StepResult, add_ratios
from benchmarks.timing import percentile
from benchmarks.workloads import infer_path, json_event, workload

MODELS = ("digits", "minilm")
CONTENDERS = ("onnxfn", "tutorial", "floor")


def _record(name: str, model: str, metric: str, variant: str, values: list[float], **extra: Any) -> Record:
    return Record(
        name=name,
        model=model,
        variant=variant,
        metric=metric,
        median=statistics.median(values),
        p90=percentile(values, 0.9),
        unit="ms",
        runs=len(values),
        extra=dict(extra),
    )


def measure(quick: bool) -> StepResult:
    function_core, server_core = lambda_env.cores()
    runs = 2 if quick else 7
    result = StepResult()
    samples: dict[tuple[str, str], list[dict[str, float]]] = {(m, c): [] for m in MODELS for c in CONTENDERS}
    with lambda_env.local_s3(server_core) as s3, tempfile.TemporaryDirectory(prefix="onnxfn-cold-") as tmp:
        jobs: dict[tuple[str, str], Any] = {}
        importtime_args: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}
        work = Path(tmp)
        for model in MODELS:
            model_env = s3.upload(model)
            env = lambda_env.function_environment(model, model_env, s3.endpoint)
            item = workload(model, 1)
            tutorial_env = {
                **lambda_env.host_environment(),
                **lambda_env.aws_environment(s3.endpoint),
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(lambda_env.MEMORY_MB),
                **s3.tutorial_environment(model, model_env),
            }
            feeds = Path(tmp) / f"{model}-feeds.npz"
            np.savez(feeds, **item.feeds)  # type: ignore[arg-type]
            manifest = json.loads((lambda_env.ARTIFACTS / model / "manifest.json").read_text())
            model_path = lambda_env.ARTIFACTS / model / lambda_env.manifest_files(model)["model"]
            preoptimized = bool(manifest["onnx"]["optimization_level"])
            onnxfn_event = json_event(infer_path(model), item.oip_json)
            tutorial_event = json_event("/predict", item.tutorial_json)
            jobs[(model, "onnxfn")] = lambda e=env, ev=onnxfn_event: fresh.onnxfn(e, ev, work, function_core)
            jobs[(model, "tutorial")] = lambda e=tutorial_env, ev=tutorial_event: fresh.tutorial(
                e, ev, work, function_core
            )
            jobs[(model, "floor")] = lambda p=model_path, f=feeds, o=preoptimized: fresh.floor(
                p, f, o, work, function_core
            )
            importtime_args[model] = (env, onnxfn_event)
            result.data.setdefault("environment", {})[model] = {
                "onnxfn": lambda_env.reported_environment(env),
                "tutorial": lambda_env.reported_environment(tutorial_env),
            }
        for round_index in range(runs + (0 if quick else 1)):
            for key, job in jobs.items():
                sample = job()
                if quick or round_index > 0:
                    samples[key].append(sample)
            print(f"  cold start round {round_index + 1}/{runs + (0 if quick else 1)} done", flush=True)
        result.data["importtime"] = {
            model: fresh.importtime(env, event, work, function_core) for model, (env, event) in importtime_args.items()
        }

    for model in MODELS:
        totals = {
            c: _record(
                c,
                model,
                "cold start",
                "fresh process → first response, batch 1",
                [s["total"] for s in samples[(model, c)]],
                phases_ms={p: statistics.median(s[p] for s in samples[(model, c)]) for p in fresh.PHASES},
                peak_rss_mb=statistics.median(s["peak_rss_mb"] for s in samples[(model, c)]),
            )
            for c in CONTENDERS
        }
        add_ratios(totals["onnxfn"], {"tutorial": totals["tutorial"], "floor": totals["floor"]})
        add_ratios(totals["tutorial"], {"floor": totals["floor"]})
        result.records.extend(totals.values())
        variants = {"onnxfn": "import handlers.api", "tutorial": "its imports", "floor": "import onnxruntime"}
        inits = {
            c: _record(c, model, "init (import)", variants[c], [s["import"] for s in samples[(model, c)]])
            for c in CONTENDERS
        }
        add_ratios(inits["onnxfn"], {"tutorial": inits["tutorial"], "floor": inits["floor"]})
        result.records.extend(inits.values())
        tutorial_init = [s["import"] + s["fetch"] + s["session"] for s in samples[(model, "tutorial")]]
        result.records.append(
            _record("tutorial", model, "init (Lambda init phase)", "imports + download + session", tutorial_init)
        )
    pooled = [s["import"] for m in MODELS for s in samples[(m, "onnxfn")]]
    result.records.append(_record("onnxfn", "both", "init (import)", "import handlers.api, all cold starts", pooled))
    split = all(s.get("split_from_log", True) for m in MODELS for s in samples[(m, "onnxfn")])
    result.notes.append(
        f"cold start: {runs} fresh processes per contender and model (interleaved"
        + ("" if quick else ", after one untimed round")
        + f"), pinned to core {function_core}, moto S3 server on core {server_core}; the handler code "
        "compiles at every start as in Lambda (PYTHONDONTWRITEBYTECODE=1, no __pycache__), the libraries "
        "load from the venv's .pyc files (a Lambda layer has none: there they compile at every init too)"
    )
    if not split:
        result.notes.append("onnxfn's 'model loaded' log line was missing: fetch and session not split out")
    return result

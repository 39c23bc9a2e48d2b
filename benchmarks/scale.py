"""Scale: `cdk synth` time and template sizes at 1 / 10 / 30 / 60 models, and `onnxfn serve` at 60.

The models are copies of digits under other names (the model's size does not enter a template).
Each synth runs in a fresh process, as the CDK CLI runs ``app.py`` (jsii's start included), with
cdk-nag's checks; interleaved in rounds so the machine's noise spreads over every size. Then
``onnxfn serve`` starts on the 60-model assembly: its startup (the embedded AWS, the uploads, the
queues, the API; no function started) and a first request to the last model (a cold start).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.records import Record, StepResult, from_samples
from benchmarks.timing import ROOT

SIZES = (1, 10, 30, 60)
SYNTH = """
import json, sys
from app import build_app
app, stack = build_app({"onnxfn": json.loads(sys.argv[1])}, outdir=sys.argv[2])
app.synth()
counts = stack.resource_counts()
print(json.dumps({"app": counts.pop(stack.stack_name), "model_max": max(counts.values()), "budget": stack.budget}))
"""


def copies(folder: Path, count: int) -> list[str]:
    """``count`` copies of the digits artifact, named digits00, digits01, ..."""
    source = ROOT / "model_artifacts" / "digits"
    names = [f"digits{i:02d}" for i in range(count)]
    for name in names:
        if not (folder / name).exists():
            shutil.copytree(source, folder / name)
            manifest = json.loads((folder / name / "manifest.json").read_text())
            (folder / name / "manifest.json").write_text(json.dumps({**manifest, "name": name}))
    return names


def synth(artifacts: Path, names: list[str], out: Path) -> tuple[float, dict[str, Any]]:
    """Seconds of one synth in a fresh process, and what it printed (resource counts, budget lines)."""
    context = json.dumps({"artifacts_dir": str(artifacts), "models": {name: {} for name in names}})
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "CDK_DISABLE_CLI_TELEMETRY": "true"}
    shutil.rmtree(out, ignore_errors=True)
    begun = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", SYNTH, context, str(out)], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - begun
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def template_bytes(out: Path) -> tuple[int, int]:
    """Bytes of the app's template and of the largest model's."""
    own = (out / "Onnxfn.template.json").stat().st_size
    nested = [p.stat().st_size for p in out.glob("*.nested.template.json")]
    return own, max(nested, default=0)


@contextlib.contextmanager
def running_serve(app_dir: Path, work: Path, *args: str) -> Iterator[tuple[dict[str, Any], float]]:
    """``onnxfn serve`` on ``app_dir`` until the block ends: its state and seconds to be ready."""
    state_file = work / "serve.json"
    command = [str(Path(sys.executable).parent / "onnxfn"), "serve", "--port", "0", "--app", str(app_dir)]
    command += ["--synth", "never", "--state-file", str(state_file), *args]
    with (work / "serve.log").open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        begun = time.perf_counter()
        while not state_file.exists():
            if process.poll() is not None or time.perf_counter() - begun > 300:
                raise RuntimeError(f"onnxfn serve did not start: {(work / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield json.loads(state_file.read_text()), time.perf_counter() - begun
    finally:
        process.send_signal(2)
        process.wait(timeout=120)


def serve_startup(app_dir: Path, model: str, work: Path) -> dict[str, float]:
    """``onnxfn serve`` on ``app_dir``: its reported startup, and the first request to ``model``."""
    from onnxfn.local.client import AppClient

    with running_serve(app_dir, work) as (state, ready_s):
        client = AppClient(state)
        body = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]})
        sent = time.perf_counter()
        reply = client.request("POST", f"/v2/models/{model}/infer", body)
        first_ms = (time.perf_counter() - sent) * 1000
        client.close()
        if reply.status != 200:
            raise RuntimeError(f"{model}: {reply.status}")
        return {"startup_s": float(state["startup_s"]), "ready_s": ready_s, "first_request_ms": first_ms}


def measure(quick: bool) -> StepResult:
    sizes = SIZES[:2] if quick else SIZES
    rounds = 1 if quick else 3
    result = StepResult()
    with tempfile.TemporaryDirectory(prefix="onnxfn-scale-") as tmp:
        artifacts = Path(tmp) / "artifacts"
        artifacts.mkdir()
        names = copies(artifacts, max(sizes))
        samples: dict[int, list[float]] = {n: [] for n in sizes}
        facts: dict[int, dict[str, Any]] = {}
        for _ in range(rounds):
            for n in sizes:
                seconds, printed = synth(artifacts, names[:n], Path(tmp) / f"out{n}")
                samples[n].append(seconds)
                own, nested = template_bytes(Path(tmp) / f"out{n}")
                api = next(line for line in printed["budget"] if line.startswith("API resources:"))
                facts[n] = {
                    "resources_app": printed["app"],
                    "resources_model_max": printed["model_max"],
                    "bytes_app": own,
                    "bytes_model_max": nested,
                    "api_resources": int(api.split()[2]),
                    "templates": 1 + n,
                }
        for n in sizes:
            label = f"{n} model" + ("s" if n != 1 else "")
            record = from_samples("cdk synth", label, "fresh process, cdk-nag", "synth time", samples[n], "s")
            record.extra.update(facts[n])
            result.records.append(record)
        base = result.records[0]
        for record in result.records[1:]:
            record.ratios[f"{sizes[0]} model"] = (record.median or 0) / (base.median or 1)
        served = serve_startup(Path(tmp) / f"out{max(sizes)}", names[max(sizes) - 1], Path(tmp))
        result.records.append(
            Record(
                name="onnxfn serve",
                model=f"{max(sizes)} models",
                variant="startup, no function started",
                metric="serve startup",
                median=served["startup_s"],
                p90=None,
                unit="s",
                runs=1,
                extra=served,
            )
        )
    result.notes.append("scale: benchmarks/scale.py (copies of digits; synth in a fresh process, both cores)")
    return result

"""``onnxfn demo``: the app as ``cdk deploy`` would create it, run locally, driven over HTTP.

The cloud assembly is synthesized when stale, the local app starts (moto as the embedded AWS,
one worker process per function, the API Gateway emulation), and the demo sends one request to
each model through the API, drops a batch file into the digits inbox, queues one request for
minilm, prints the answers and the timings, and stops everything.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from onnxfn.local.client import AppClient
from onnxfn.local.runtime import RuntimeOptions, RuntimeUnavailable
from onnxfn.local.serve import LocalApp, ServeOptions
from onnxfn.local.synth import stale_reason, synthesize

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a string instrument.",
    "The stock market fell sharply on Monday.",
    "Shares dropped at the start of the week.",
    "A cat sleeps on a warm windowsill.",
]


class DemoClient:
    """JSON requests through the local API, timed from the client's side."""

    def __init__(self, client: AppClient) -> None:
        self.client = client

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
        started = time.perf_counter()
        reply = self.client.request(method, path, json.dumps(body) if body is not None else None)
        elapsed = (time.perf_counter() - started) * 1000
        return reply.status, reply.json(), elapsed


def _timed(client: DemoClient, path: str, body: Any, runs: int = 20) -> tuple[Any, float, float]:
    status, cold, cold_ms = client.call("POST", path, body)
    if status != 200:
        raise RuntimeError(f"POST {path} answered {status}: {cold}")
    warm = [client.call("POST", path, body)[2] for _ in range(runs)]
    return cold, cold_ms, statistics.median(warm)


def _digits(client: DemoClient, console: Console) -> tuple[float, float]:
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    picks = [3, 140, 555, 901, 1337, 1700]
    body = {
        "id": "digits-demo",
        "inputs": [{"name": "pixels", "shape": [len(picks), 64], "datatype": "FP32", "data": features[picks].tolist()}],
    }
    result, cold_ms, warm_ms = _timed(client, "/v2/models/digits/infer", body)
    outputs = {o["name"]: o for o in result["outputs"]}
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    table = Table(title="digits — POST /v2/models/digits/infer (batch of 6 images)")
    for column in ("image", "true label", "predicted", "label_name", "probability"):
        table.add_column(column, justify="right")
    for row, index in enumerate(picks):
        predicted = outputs["label"]["data"][row]
        table.add_row(
            f"#{index}",
            str(labels[index]),
            str(predicted),
            outputs["label_name"]["data"][row],
            f"{probabilities[row, predicted]:.3f}",
        )
    console.print(table)
    status, v1, _ = client.call("POST", "/v1/models/digits:predict", {"instances": [features[42].tolist()]})
    console.print(f"V1 predict → {status}: label {v1['predictions'][0]['label']} (true {labels[42]})")
    return cold_ms, warm_ms


def _minilm(client: DemoClient, console: Console) -> tuple[float, float]:
    body = {"inputs": [{"name": "text", "shape": [len(SENTENCES)], "datatype": "BYTES", "data": SENTENCES}]}
    result, cold_ms, warm_ms = _timed(client, "/v2/models/minilm/infer", body)
    output = result["outputs"][0]
    vectors = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    similarity = vectors @ vectors.T
    table = Table(title=f"minilm — POST /v2/models/minilm/infer → {output['shape']} embeddings; cosine similarity")
    table.add_column("sentence")
    table.add_column("closest other sentence")
    table.add_column("cosine", justify="right")
    table.add_column("norm", justify="right")
    for row, sentence in enumerate(SENTENCES):
        others = [(similarity[row, j], j) for j in range(len(SENTENCES)) if j != row]
        score, best = max(others)
        table.add_row(sentence, SENTENCES[best], f"{score:.3f}", f"{np.linalg.norm(vectors[row]):.3f}")
    console.print(table)
    return cold_ms, warm_ms


def _batch_file(client: AppClient, console: Console) -> float:
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    lines = [json.dumps({"pixels": row.tolist()}) for row in features[:200]]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "digits-demo.jsonl"
        path.write_text("\n".join(lines) + "\n")
        started = time.perf_counter()
        key = client.put_file("digits", path)
    summary = client.wait_for_batch("digits", key, timeout_s=120)
    elapsed = (time.perf_counter() - started) * 1000
    if summary is None:
        raise RuntimeError(f"no summary for {key} within 120 s")
    entry = client.model("digits")
    output = client.aws("s3").get_object(Bucket=entry["bucket"], Key=summary["output_key"])["Body"].read()
    predicted = [json.loads(line)["label"] for line in output.decode().splitlines()]
    agree = sum(int(p == t) for p, t in zip(predicted, labels[:200], strict=True))
    console.print(
        f"batch file s3://{entry['bucket']}/{key}: {summary['scored']} rows scored, {summary['failed']} failed "
        f"→ {summary['output_key']} ({agree}/200 match the true labels) in {elapsed:.0f} ms",
        soft_wrap=True,
    )
    return elapsed


def _queue_message(client: AppClient, console: Console) -> float:
    body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [SENTENCES[0]]}]})
    started = time.perf_counter()
    message_id = client.send_message("minilm", body)
    result = client.wait_for_result("minilm", message_id, timeout_s=120)
    elapsed = (time.perf_counter() - started) * 1000
    if result is None or not result[0]:
        raise RuntimeError(f"queue message {message_id}: {result}")
    output = result[1]["outputs"][0]
    console.print(
        f"queue message {message_id} → results/minilm/{message_id}.json: {output['name']} "
        f"{output['shape']} in {elapsed:.0f} ms",
        soft_wrap=True,
    )
    return elapsed


def _start(app_dir: Path, runtime: RuntimeOptions, console: Console) -> LocalApp:
    """The local app, run faithfully; on the dev venv (said loudly) when a runtime's interpreter is missing."""
    try:
        return LocalApp(ServeOptions(app_dir=app_dir, port=0, state_file=None, runtime=runtime)).start()
    except RuntimeUnavailable as exc:
        if runtime.dev:
            raise
        console.print(
            f"[bold yellow]warning:[/] {exc}\n[bold yellow]the demo runs on the development venv instead: "
            "NOT what deploys; its timings are not Lambda's[/]",
            soft_wrap=True,
        )
        options = ServeOptions(app_dir=app_dir, port=0, state_file=None, runtime=replace(runtime, dev=True))
        return LocalApp(options).start()


def run_demo(
    root: Path, console: Console, app_dir: Path = Path("cdk.out"), runtime: RuntimeOptions | None = None
) -> int:
    """Run the demo; non-zero when a model is missing or a step fails."""
    missing = [name for name in ("digits", "minilm") if not (root / name / "manifest.json").exists()]
    if missing:
        console.print(f"[red]missing models:[/] {', '.join(missing)} — run `make models` (onnxfn build-demo)")
        return 2
    project = Path.cwd()
    reason = stale_reason(project, app_dir)
    if reason:
        with console.status(f"cdk synth ({reason})…"):
            started = time.perf_counter()
            synthesize(project, app_dir)
        console.print(f"synthesized {app_dir} in {time.perf_counter() - started:.1f} s ({reason})")
    started = time.perf_counter()
    app = _start(app_dir, runtime or RuntimeOptions(), console)
    console.print(
        f"local app up in {(time.perf_counter() - started) * 1000:.0f} ms at {app.state()['url']}: "
        f"{len(app.pools)} functions, embedded AWS at {app.state()['aws_endpoint']}"
    )
    for pool in app.pools.values():
        launch = pool.runtime.launch
        notes = "".join(f"; {note}" for note in launch.notes)
        console.print(f"  {pool.runtime.name}: {launch.describe()}{notes}", highlight=False, soft_wrap=True)
    try:
        client = AppClient(app.state())
        demo = DemoClient(client)
        timings = Table(title="timings over HTTP (local API Gateway → worker process → handler)")
        for column in ("model", "first request ms (worker start, init with the model, the request)", "warm median ms"):
            timings.add_column(column, justify="right")
        for name, show in (("digits", _digits), ("minilm", _minilm)):
            cold_ms, warm_ms = show(demo, console)
            timings.add_row(name, f"{cold_ms:.1f}", f"{warm_ms:.2f}")
        console.print(timings)
        _batch_file(client, console)
        _queue_message(client, console)
        cold = Table(
            title="worker cold starts (Lambda's Init Duration: the handler's import and the model, if at init)"
        )
        for column in ("function", "kind", "cold starts", "init ms"):
            cold.add_column(column, justify="right")
        for pool in app.pools.values():
            if pool.stats.cold_starts:
                inits = ", ".join(f"{ms:.0f}" for ms in pool.stats.cold_starts)
                cold.add_row(pool.runtime.name, pool.runtime.kind, str(len(pool.stats.cold_starts)), inits)
        console.print(cold)
        client.close()
    finally:
        pids = app.worker_pids()
        app.stop()
    console.print(f"stopped: {len(pids)} worker process(es), the gateway and the embedded AWS")
    return 0

"""``onnxfn demo``: both demo models served by the real API handler, in-process, with moto as S3.

Every request goes through an API Gateway REST proxy event into ``handlers.api.lambda_handler``,
exactly as in Lambda; the model files are fetched from (moto's) S3 and verified on first use.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from handlers.runtime.manifest import Manifest

BUCKET = "onnxfn-demo-models"
QUIET_ENV = {
    # moto only: fake credentials that no real AWS endpoint would accept.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
}
SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a string instrument.",
    "The stock market fell sharply on Monday.",
    "Shares dropped at the start of the week.",
    "A cat sleeps on a warm windowsill.",
]


class DemoClient:
    """Sends API Gateway events to the in-process handler and times them."""

    def __init__(self) -> None:
        from handlers import api
        from onnxfn.local.context import LocalContext

        self._api = api
        self._context = LocalContext

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
        from onnxfn.local.events import api_gateway_event, response_body

        raw = json.dumps(body) if body is not None else None
        event = api_gateway_event(method, path, raw, {"Content-Type": "application/json"})
        started = time.perf_counter()
        # The handler prints its EMF metrics to stdout, as in Lambda; the demo shows tables instead.
        with contextlib.redirect_stdout(io.StringIO()):
            response = self._api.lambda_handler(event, self._context())
        elapsed = (time.perf_counter() - started) * 1000
        return response["statusCode"], json.loads(response_body(response)), elapsed


def _serve(client: DemoClient, s3: Any, artifact: Path) -> Manifest:
    from handlers.runtime.model_store import ModelStore, reset_store
    from handlers.runtime.settings import load_settings
    from onnxfn.local.upload import upload_artifact

    environment = upload_artifact(s3, BUCKET, artifact)
    reset_store(ModelStore(load_settings({**environment, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"})))
    return Manifest.load(artifact / "manifest.json")


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


def run_demo(root: Path, console: Console) -> int:
    """Serve every demo model found under ``root``; non-zero when one is missing or fails."""
    os.environ.update(QUIET_ENV)
    import boto3
    from moto import mock_aws

    missing = [name for name in ("digits", "minilm") if not (root / name / "manifest.json").exists()]
    if missing:
        console.print(f"[red]missing models:[/] {', '.join(missing)} — run `make models` (onnxfn build-demo)")
        return 2
    timings = Table(title="timings (in-process handler, moto S3)")
    for column in ("model", "first request (fetch + verify + load + infer) ms", "warm request median ms"):
        timings.add_column(column, justify="right")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        started = time.perf_counter()
        client = DemoClient()
        console.print(f"handler init (imports): {(time.perf_counter() - started) * 1000:.0f} ms")
        for name, show in (("digits", _digits), ("minilm", _minilm)):
            _serve(client, s3, root / name)
            cold_ms, warm_ms = show(client, console)
            timings.add_row(name, f"{cold_ms:.1f}", f"{warm_ms:.2f}")
    console.print(timings)
    return 0

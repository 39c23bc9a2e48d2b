"""Warm overhead of the API handler over a bare ``session.run``, init (import) time and first-request time.

First request = the first invocation after init: manifest and model fetched from (moto's) S3,
sha256 checked, session created, one inference; the import is measured apart as init.

Run: ``.venv/bin/python -m benchmarks.handler_overhead`` (``make bench`` runs every benchmark).
Everything in one process run, medians over many repetitions; the machine is shared, so compare the
ratios, not the absolute milliseconds, across runs.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import median_ms, run_python

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["The quick brown fox jumps over the lazy dog."] * 8  # minilm's request: eight sentences
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="WARNING",
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1769",
)


def subprocess_ms(code: str, runs: int = 5) -> float:
    return statistics.median(float(run_python(code)) for _ in range(runs))


# A moto server, not mock_aws: the store reads the model with a standard-library SigV4 GetObject
# when the credentials are in the environment, as in Lambda, and mock_aws only intercepts botocore.
FIRST_REQUEST = """
import io, json, os, time, contextlib
from benchmarks.lambda_env import local_s3
with local_s3() as server:
    s3 = server.client; s3.create_bucket(Bucket="bench-first")
    os.environ.update({{"AWS_ENDPOINT_URL": server.endpoint, "AWS_SESSION_TOKEN": "testing"}})
    from pathlib import Path
    from onnxfn.local.upload import upload_artifact
    os.environ.update(upload_artifact(s3, "bench-first", Path("model_artifacts/{name}")))
    from onnxfn.local.events import api_gateway_event
    from onnxfn.local.context import LocalContext
    event = api_gateway_event("POST", "/v2/models/{name}/infer", {body!r}, {{"Content-Type": "application/json"}})
    from handlers import api
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        response = api.lambda_handler(event, LocalContext())
    assert response["statusCode"] == 200, response
    print((time.perf_counter() - started) * 1000)
"""


def _request_bodies(pixels: np.ndarray) -> dict[str, str]:
    """The OIP JSON request of each model: digits one row of ``pixels``, minilm eight sentences."""
    digits = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels.tolist()}]}
    minilm = {"inputs": [{"name": "text", "shape": [8], "datatype": "BYTES", "data": TEXTS}]}
    return {"digits": json.dumps(digits), "minilm": json.dumps(minilm)}


def _bare_session(name: str, intra_op_threads: int) -> Any:
    """An onnxruntime session on the model's file with the handler's thread settings (the floor)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        str(ROOT / "model_artifacts" / name / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )


def _warm_figures(s3: Any, name: str, body: str, pixels: np.ndarray) -> dict[str, float]:
    """The handler's warm time against a bare ``session.run`` on the same inputs, the model loaded first."""
    from handlers import api
    from handlers.runtime.model_store import ModelStore, reset_store
    from handlers.runtime.settings import load_settings
    from onnxfn.local.context import LocalContext
    from onnxfn.local.events import api_gateway_event
    from onnxfn.local.upload import upload_artifact

    env = upload_artifact(s3, "bench", ROOT / "model_artifacts" / name)
    store = ModelStore(load_settings({**env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"}))
    reset_store(store)
    event = api_gateway_event("POST", f"/v2/models/{name}/infer", body, {"Content-Type": "application/json"})
    context = LocalContext()

    def handler() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            api.lambda_handler(event, context)

    handler()
    loaded = store.get_model()
    session = _bare_session(name, store.settings.intra_op_threads)
    if name == "digits":
        feeds = {"pixels": pixels}
        outputs = ["probabilities"]
    else:
        feeds = loaded.pipeline.tokenize(TEXTS)  # type: ignore[attr-defined]
        outputs = ["last_hidden_state"]
    runs = 300 if name == "digits" else 60
    handler_ms = median_ms(handler, runs)
    bare_ms = median_ms(functools.partial(session.run, outputs, feeds), runs)
    return {
        f"{name}_handler_warm_ms": handler_ms,
        f"{name}_bare_session_run_ms": bare_ms,
        f"{name}_overhead_ms": handler_ms - bare_ms,
        f"{name}_overhead_ratio": handler_ms / bare_ms,
    }


def main() -> None:
    """Measure init, each model's first request and warm overhead, and print one figure a line."""
    from benchmarks.lambda_env import local_s3

    results: dict[str, float] = {}
    results["init_import_ms"] = subprocess_ms(
        "import time; t=time.perf_counter(); import handlers.api; print((time.perf_counter()-t)*1000)"
    )
    pixels = np.random.default_rng(0).uniform(0, 16, (1, 64)).astype(np.float32)
    bodies = _request_bodies(pixels)
    for name, body in bodies.items():
        results[f"{name}_first_request_ms"] = subprocess_ms(FIRST_REQUEST.format(name=name, body=body))

    with local_s3() as server:
        os.environ.update(AWS_ENDPOINT_URL=server.endpoint, AWS_SESSION_TOKEN="testing")
        server.client.create_bucket(Bucket="bench")
        for name, body in bodies.items():
            results.update(_warm_figures(server.client, name, body, pixels))
    for key, value in results.items():
        print(f"{key:32s} {value:10.3f}")


if __name__ == "__main__":
    main()

"""Warm latency: onnxfn's handler end to end against a bare ``session.run``, the tutorial handler
and PyTorch eager, on the same requests, in interleaved rounds of one process of the development
venv (in-process: not the deployed runtime; the faithful warm figures are cold_start.py's).

- onnxfn: ``handlers.api.lambda_handler`` on an API Gateway event (OIP JSON, or the OIP binary
  extension built by tritonclient), model loaded from a local moto S3 server beforehand, logging
  and EMF metrics on as deployed (written to /dev/null).
- bare: ``benchmarks/peers/bare.py`` on the same tensors (minilm: pre-tokenized, raw hidden states).
- tutorial: ``benchmarks/peers/tutorial_handler.py`` on an event with its own JSON body.
- pytorch: ``benchmarks/peers/pytorch_eager.py`` in its venv (minilm 1×32 and 8×128), timed there.

``vcpus=1`` stands for 1,769 MB: the process (and the PyTorch peer) is pinned to one core and
onnxfn sizes its session to 1 thread; the tutorial keeps onnxruntime's default thread pool, as
written. ``vcpus=2`` (for the cost table): 3,538 MB, two cores, onnxfn and the bare run on 2 threads.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from benchmarks import lambda_env
from benchmarks.peers import bare
from benchmarks.records import Record, StepResult, add_ratios, from_samples
from benchmarks.timing import interleaved, median_ms, rounds_for
from benchmarks.workloads import BATCHES, Workload, binary_event, infer_path, json_event, workload

PYTORCH_BATCHES = (1, 8)


def _budget(item: Workload, quick: bool, vcpus: int) -> tuple[float, int, int]:
    """(seconds, fewest rounds, most rounds) for one case; the 2-vCPU runs (for the cost table) get half."""
    if quick:
        return 1.0, 2, 30
    share = 1.0 if vcpus == 1 else 0.5
    if item.model == "minilm" and item.batch == 32:
        return 60.0 * share, 8, 300
    if item.model == "minilm" and item.batch == 8:
        return 45.0 * share, 20, 300
    return 8.0 * share, 30, 300


def _load_tutorial(model: str, env: dict[str, str]) -> ModuleType:
    """A fresh instance of the tutorial module (its own S3 download, session and temp dir)."""
    os.environ.pop("TUTORIAL_TOKENIZER_KEY", None)
    os.environ.update(env)
    tempfile.tempdir = tempfile.mkdtemp(prefix=f"tutorial-{model}-")
    path = lambda_env.PEERS / "tutorial_handler.py"
    spec = importlib.util.spec_from_file_location(f"tutorial_handler_{model}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tempfile.tempdir = None
    return module


def _oip_outputs(response: dict[str, Any]) -> dict[str, np.ndarray]:
    document = json.loads(response["body"])
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in document["outputs"]}


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def _same_work(item: Workload, onnxfn: dict[str, Any], tutorial: dict[str, Any], raw: list[Any]) -> dict[str, float]:
    """How closely the contenders' answers agree (they must do the same work)."""
    ours = _oip_outputs(onnxfn)
    theirs = json.loads(tutorial["body"])["predictions"]
    if item.model == "digits":
        return {
            "max_abs_diff_tutorial": float(np.max(np.abs(ours["probabilities"] - np.array(theirs[1])))),
            "max_abs_diff_bare": float(np.max(np.abs(ours["probabilities"] - raw[1]))),
        }
    mask = item.feeds["attention_mask"][:, :, None].astype(np.float32)
    pooled = (raw[0] * mask).sum(axis=1) / mask.sum(axis=1)
    return {
        "cosine_min_tutorial": _cosine_min(ours["embedding"], np.array(theirs)),
        "cosine_min_bare_pooled": _cosine_min(ours["embedding"], pooled),
    }


class _Quiet:
    """Calls made with stdout (EMF metric lines) going to /dev/null, as for every contender."""

    def __init__(self) -> None:
        self.sink = open(os.devnull, "w")  # noqa: SIM115 - open for the whole step

    def wrap(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with contextlib.redirect_stdout(self.sink):
                return fn()

        return call


def _handler_call(api: ModuleType, event: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    from onnxfn.local.context import LocalContext

    context = LocalContext()

    def call() -> dict[str, Any]:
        response: dict[str, Any] = api.lambda_handler(event, context)
        if response["statusCode"] != 200:
            raise RuntimeError(f"handler answered {response['statusCode']}: {response.get('body', '')[:300]}")
        return response

    return call


def _set_environment(memory_mb: int) -> None:
    """The function's environment in this process (Lambda's variables, the stack's defaults, the memory)."""
    os.environ.update(
        {**lambda_env.aws_environment(None), **lambda_env.FUNCTION_DEFAULTS, "POWERTOOLS_SERVICE_NAME": "onnxfn-bench"}
    )
    os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(memory_mb)


def _tutorial_environment(model: str, env: dict[str, str]) -> dict[str, str]:
    """Where the tutorial handler finds the objects onnxfn's handler reads (same bucket, same keys)."""
    tutorial_env = {
        "TUTORIAL_BUCKET": lambda_env.BUCKET,
        "TUTORIAL_MODEL_KEY": env["MODEL_PREFIX"] + lambda_env.manifest_files(model)["model"],
    }
    if "tokenizer" in lambda_env.manifest_files(model):
        tutorial_env["TUTORIAL_TOKENIZER_KEY"] = env["MODEL_PREFIX"] + "tokenizer.json"
    return tutorial_env


def _prepare_model(s3: Any, model: str, memory_mb: int, vcpus: int) -> tuple[Any, ModuleType | None]:
    """Upload ``model`` and point the handler's store at it; the bare session and (1 vCPU) the tutorial on it."""
    from handlers.runtime.model_store import ModelStore, reset_store
    from handlers.runtime.settings import load_settings
    from onnxfn.local.upload import upload_artifact

    env = upload_artifact(s3, lambda_env.BUCKET, lambda_env.ARTIFACTS / model)
    os.environ.update(env)
    store = ModelStore(load_settings({**env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb)}))
    reset_store(store)
    manifest = json.loads((lambda_env.ARTIFACTS / model / "manifest.json").read_text())
    model_bytes = (lambda_env.ARTIFACTS / model / lambda_env.manifest_files(model)["model"]).read_bytes()
    session = bare.create_session(
        model_bytes, store.settings.intra_op_threads, bool(manifest["onnx"]["optimization_level"])
    )
    tutorial = _load_tutorial(model, _tutorial_environment(model, env)) if vcpus == 1 else None
    return session, tutorial


def _stop_pytorch(result: StepResult, peer: Any) -> None:
    """Close the PyTorch peer, keeping its startup and stats and a record of its peak memory."""
    stats = peer.ask("stats")
    result.data["pytorch"] = {**peer.startup, **stats}
    peer.close()
    result.records.append(
        Record(
            name="pytorch",
            model="minilm",
            variant="after its 1×32 and 8×128 runs",
            metric="peak RSS",
            median=stats["vm_hwm_mb"],
            p90=None,
            unit="MB",
            runs=1,
            extra={"ru_maxrss_mb": stats["ru_maxrss_mb"], "threads": stats["threads"]},
        )
    )


def measure(quick: bool, vcpus: int = 1) -> StepResult:
    """Every contender's warm latency on every model and batch, at ``vcpus`` (1: pinned to one core)."""
    function_core, server_core = lambda_env.cores()
    if vcpus == 1:
        lambda_env.pin(function_core)
    memory_mb = lambda_env.MEMORY_MB * vcpus
    _set_environment(memory_mb)
    models = ("digits", "minilm") if vcpus == 1 else ("minilm",)
    batches = BATCHES if vcpus == 1 and not quick else PYTORCH_BATCHES
    result = StepResult()
    quiet = _Quiet()
    peer = _start_pytorch(result, function_core) if vcpus == 1 else None
    try:
        # A local moto S3 server (the handlers may read S3 without botocore, which mock_aws cannot serve).
        with lambda_env.local_s3(server_core) as server:
            s3 = server.client
            os.environ["AWS_ENDPOINT_URL"] = server.endpoint
            from handlers import api
            from handlers.runtime.observability import logger

            logger.registered_handler.setStream(quiet.sink)  # type: ignore[attr-defined]
            for model in models:
                session, tutorial = _prepare_model(s3, model, memory_mb, vcpus)
                for batch in batches:
                    item = workload(model, batch)
                    _measure_case(result, item, api, session, tutorial, peer, quiet, quick, vcpus)
                    print(f"  warm {model} {item.label} ({vcpus} vCPU) done", flush=True)
    finally:
        if peer is not None:
            _stop_pytorch(result, peer)
    result.notes.append(
        f"warm, {vcpus} vCPU: AWS_LAMBDA_FUNCTION_MEMORY_SIZE={memory_mb} (onnxfn: "
        f"{vcpus} intra-op thread{'s' if vcpus > 1 else ''}); "
        + ("process pinned to one core" if vcpus == 1 else "both cores")
        + "; Powertools log level INFO and EMF metrics on, written to /dev/null"
    )
    return result


def _start_pytorch(result: StepResult, core: int | None) -> Any:
    from benchmarks.pytorch_venv import PyTorchPeer, python

    if not python().exists():
        result.notes.append("PyTorch peer skipped: its venv is missing (run the pytorch-venv step)")
        return None
    batches = {workload("minilm", b).label: list(workload("minilm", b).texts) for b in PYTORCH_BATCHES}
    return PyTorchPeer(batches, Path(tempfile.mkdtemp(prefix="pytorch-peer-")) / "batches.json", core)


def _measure_case(
    result: StepResult,
    item: Workload,
    api: ModuleType,
    session: Any,
    tutorial: ModuleType | None,
    peer: Any,
    quiet: _Quiet,
    quick: bool,
    vcpus: int,
) -> None:
    path = infer_path(item.model)
    feeds = bare.feeds_for(session, item.feeds)
    contenders: dict[str, Callable[[], Any]] = {
        "onnxfn": quiet.wrap(_handler_call(api, json_event(path, item.oip_json))),
        "bare": quiet.wrap(lambda: bare.run(session, feeds)),
    }
    if vcpus == 1:
        event = binary_event(path, item.oip_binary, item.oip_binary_header_length)
        assert event["isBase64Encoded"] and base64.b64decode(event["body"]) == item.oip_binary
        contenders["onnxfn-binary"] = quiet.wrap(_handler_call(api, event))
    timers: dict[str, Callable[[], float]] = {}
    if tutorial is not None:
        tutorial_event = json_event("/predict", item.tutorial_json)
        contenders["tutorial"] = quiet.wrap(lambda: tutorial.lambda_handler(tutorial_event, None))
        checks = _same_work(item, contenders["onnxfn"](), contenders["tutorial"](), bare.run(session, feeds))
        if peer is not None and item.model == "minilm" and item.batch in PYTORCH_BATCHES:
            theirs = np.array(peer.ask(f"embed {item.label}")["embeddings"])
            checks["cosine_min_pytorch"] = _cosine_min(_oip_outputs(contenders["onnxfn"]())["embedding"], theirs)
            timers["pytorch"] = lambda: peer.run_ms(item.label)
        result.data.setdefault("checks", {})[f"{item.model} {item.label}"] = checks
    # Warm-up: two calls each; the second one's time sizes the number of rounds.
    call_ms = sum(median_ms(fn, 1, warmup=1) for fn in contenders.values())
    call_ms += sum([t(), t()][1] for t in timers.values())
    budget_s, low, high = _budget(item, quick, vcpus)
    rounds = rounds_for(call_ms, 1, budget_s, low, high)
    samples = interleaved(contenders, rounds, warmup=0, timers=timers)
    variant = f"{item.label} {vcpus} vCPU"
    records = {
        name: from_samples(name, item.model, variant, "warm latency", values) for name, values in samples.items()
    }
    records["onnxfn"].variant = f"{item.label} JSON {vcpus} vCPU"
    if "onnxfn-binary" in records:
        records["onnxfn-binary"].variant = f"{item.label} binary {vcpus} vCPU"
    peers = {name: r for name, r in records.items() if name not in ("onnxfn", "onnxfn-binary")}
    for name in ("onnxfn", "onnxfn-binary", "tutorial"):
        if name in records:
            add_ratios(records[name], {k: v for k, v in peers.items() if k != name})
            records[name].extra["over_bare_ms"] = (records[name].median or 0) - (records["bare"].median or 0)
    for record in records.values():
        record.extra.update(batch=item.batch, tokens=item.tokens, vcpus=vcpus)
    result.records.extend(records.values())

"""A model's Lambda fit, measured: cold start, warm latency and cost at several memory sizes.

Each memory size gets fresh execution environments run as Lambda runs the deployed function (see
:mod:`onnxfn.local.runtime`: the runtime's interpreter, the staged handlers and the built layer,
init unthrottled, invocations at the memory's CPU share), the model read from a local S3 (moto) as
a deploy uploads it, and the load mode the stack would choose. Figures are medians; a cold start is
spawn → first response of ``POST /v2/models/<name>/infer`` with a small request built from the
manifest.

Cost uses Lambda's on-demand prices (us-east-1, first pricing tier): compute per GB-second by
architecture and $0.20 per million requests. Billed duration is rounded up to 1 ms; init is billed
too (since August 2025), so a cold start costs its init as well.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract import environment as env
from contract.limits import INIT_LOAD_MAX_BYTES
from contract.manifest import ImagePipeline, Manifest
from onnxfn.local.runtime import HOST_ARCH, ROOT, LaunchPlan, RuntimeOptions, host_layer, plan

MEMORY_SIZES = (512, 1024, 1769, 3008)
# AWS Lambda pricing, us-east-1, first tier (aws.amazon.com/lambda/pricing): USD per GB-second.
PRICE_PER_GB_S = {"x86_64": 0.0000166667, "arm64": 0.0000133334}
PRICE_PER_REQUEST = 0.20 / 1_000_000
BUCKET = "onnxfn-fit"


@dataclass(frozen=True)
class FitRow:
    """One memory size: what a cold start and a warm request take and cost."""

    memory_mb: int
    vcpus: float
    cpu: str  # the CPU share, and whether it was enforced
    cold_start_ms: float  # spawn → first response (median)
    init_ms: float  # the handler's import (and the model, when loaded at init)
    first_invoke_ms: float  # the first invocation after init
    warm_ms: float  # median handler duration of warm invocations
    warm_cost_per_million: float  # USD for 1M warm requests
    cold_start_cost: float  # USD for one cold start (init + first invocation, billed)
    peak_rss_mb: float


@dataclass(frozen=True)
class Fit:
    model: str
    runtime: str
    interpreter: str
    load_mode: str
    architecture: str
    batch: int
    rows: tuple[FitRow, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def table(self) -> Any:
        """The rows as a rich Table."""
        from rich.table import Table

        where = f"{self.runtime}, {self.architecture}, model loaded at {self.load_mode_words}"
        table = Table(title=f"{self.model}: Lambda fit ({where}; requests of batch {self.batch})")
        columns = (
            "memory MB",
            "vCPU",
            "cold start ms",
            "init ms",
            "first request ms",
            "warm ms",
            "$ / 1M warm",
            "$ / cold start",
            "peak RSS MB",
        )
        for column in columns:
            table.add_column(column, justify="right")
        for row in self.rows:
            table.add_row(
                f"{row.memory_mb:,}",
                f"{row.vcpus:.2f}",
                f"{row.cold_start_ms:,.0f}",
                f"{row.init_ms:,.0f}",
                f"{row.first_invoke_ms:,.1f}",
                f"{row.warm_ms:,.2f}",
                f"{row.warm_cost_per_million:.2f}",
                f"{row.cold_start_cost:.7f}",
                f"{row.peak_rss_mb:,.0f}",
            )
        return table

    @property
    def load_mode_words(self) -> str:
        return "init (eager)" if self.load_mode == "eager" else "first request (lazy)"


def billed_cost(memory_mb: int, duration_ms: float, architecture: str = "x86_64") -> float:
    """USD Lambda bills for one request of ``duration_ms`` at ``memory_mb``."""
    seconds = math.ceil(duration_ms) / 1000
    return memory_mb / 1024 * seconds * PRICE_PER_GB_S[architecture] + PRICE_PER_REQUEST


# A paragraph of about 100 tokens: what a text model is typically sent (at batch > 1).
SAMPLE_TEXT = (
    "Serverless inference runs a model only when a request arrives, so the cost follows the traffic "
    "instead of the hours a server stays up. The price is the cold start: a new execution environment "
    "must import its libraries, read the model and create a session before it can answer, and all of "
    "that happens while a client waits for the first response."
)


def request_body(manifest: Manifest, batch: int = 1) -> str:
    """An Open Inference Protocol request the model accepts: ``batch`` rows on each tensor's batch axis
    (free dimensions 1); text is a short phrase at batch 1 and a paragraph of about 100 tokens otherwise;
    an image pipeline gets JPEGs of the model's size."""
    image = _sample_jpeg(manifest.pipeline) if isinstance(manifest.pipeline, ImagePipeline) else None
    inputs = []
    for spec in manifest.inputs:
        shape = [1 if size < 0 else size for size in spec.shape]
        if spec.batch_axis is not None and spec.shape[spec.batch_axis] < 0:
            shape[spec.batch_axis] = batch
        count = math.prod(shape)
        text = image or ("onnxfn fit" if batch == 1 else SAMPLE_TEXT)
        data: list[Any] = [text] * count if spec.datatype == "BYTES" else [0] * count
        inputs.append({"name": spec.name, "shape": shape, "datatype": spec.datatype, "data": data})
    return json.dumps({"inputs": inputs})


def _sample_jpeg(config: ImagePipeline) -> str:
    """A JPEG of the size the model takes, as base64 text (what a JSON client sends)."""
    import base64
    import io

    from PIL import Image

    height, width = config.size
    gradient = np.linspace(0, 255, width * height * 3, dtype=np.float32).reshape(height, width, 3)
    out = io.BytesIO()
    Image.fromarray(gradient.astype(np.uint8)).save(out, format="JPEG", quality=90)
    return base64.b64encode(out.getvalue()).decode("ascii")


def measure(
    artifact: Path,
    *,
    runtime: str = "python3.12",
    memory_sizes: tuple[int, ...] = MEMORY_SIZES,
    cold_runs: int = 3,
    warm_runs: int = 10,
    batch: int = 1,
    options: RuntimeOptions | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Fit:
    """Measure ``artifact`` (a model_artifacts/<name> folder) at each memory size."""
    from onnxfn.local.cloud import EmbeddedAws
    from onnxfn.local.events import api_gateway_event
    from onnxfn.local.upload import upload_artifact
    from stacks.assets import stage_handlers

    options = options or RuntimeOptions()
    manifest = Manifest.load(artifact / "manifest.json")
    load_mode = "eager" if sum(f.bytes for f in manifest.files) <= INIT_LOAD_MAX_BYTES else "lazy"
    progress(f"{runtime}: staging the handlers and the layer")
    code_dir = stage_handlers(ROOT, runtime.removeprefix("python"))
    layers = [host_layer(runtime)]
    if manifest.pipeline is not None and manifest.pipeline.requirements:
        from stacks.assets import requirements_file

        layers.append(host_layer(runtime, requirements_file(ROOT, manifest.pipeline.requirements)))
    event = api_gateway_event("POST", f"/v2/models/{manifest.name}/infer", body=request_body(manifest, batch))
    aws = EmbeddedAws().start()
    rows = []
    interpreter = ""
    try:
        s3 = aws.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        model_env = {**upload_artifact(s3, BUCKET, artifact), env.LOAD_MODE: load_mode}
        for memory_mb in memory_sizes:
            launch = plan(runtime, HOST_ARCH, memory_mb, code_dir, layers, options)
            interpreter = launch.interpreter
            function = _function(manifest.name, memory_mb, runtime, code_dir, launch, model_env, aws.endpoint)
            progress(f"{manifest.name} at {memory_mb} MB: {cold_runs} cold starts, {warm_runs} warm requests each")
            rows.append(_row(function, launch, event, cold_runs, warm_runs))
    finally:
        aws.stop()
    return Fit(manifest.name, runtime, interpreter, load_mode, HOST_ARCH, batch, tuple(rows))


def _function(
    model: str,
    memory_mb: int,
    runtime: str,
    code_dir: Path,
    launch: LaunchPlan,
    model_env: dict[str, str],
    endpoint: str,
) -> Any:
    """The model's API function at ``memory_mb``, as the stack would configure it."""
    from onnxfn.local.cloud import lambda_environment, local_aws_environment
    from onnxfn.local.functions import FunctionRuntime

    name = f"onnxfn-fit-{model}-{memory_mb}"
    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
    handler = "handlers.api.lambda_handler"
    environment = {
        **model_env,
        env.SERVICE_NAME: f"onnxfn-{model}",
        env.LOG_LEVEL: "WARNING",
        **lambda_environment(name, memory_mb, runtime, handler, code_dir, arn),
        **local_aws_environment(endpoint),
    }
    return FunctionRuntime(
        logical_id=f"Fit{memory_mb}",
        name=name,
        handler=handler,
        code_dir=code_dir,
        environment=environment,
        memory_mb=memory_mb,
        timeout_s=900.0,
        arn=arn,
        launch=launch,
        model=model,
    )


def _row(function: Any, launch: LaunchPlan, event: dict[str, Any], cold_runs: int, warm_runs: int) -> FitRow:
    """``cold_runs`` fresh execution environments, each answering one cold and ``warm_runs`` warm requests."""
    from onnxfn.local.functions import FunctionPool

    colds, inits, firsts, warms, peaks = [], [], [], [], []
    for _ in range(cold_runs):
        pool = FunctionPool(function, 1, lambda _function, _line: None)
        try:
            first = pool.invoke(event)
            if not first.ok or first.payload.get("statusCode") != 200:
                raise RuntimeError(f"{function.model} at {function.memory_mb} MB: the first request failed: {first}")
            colds.append(first.round_trip_ms)
            inits.append(first.init_ms or 0.0)
            firsts.append(first.duration_ms)
            for _ in range(warm_runs):
                warm = pool.invoke(event)
                warms.append(warm.duration_ms)
                peaks.append(warm.max_rss_mb)
        finally:
            pool.close()
    warm_ms = statistics.median(warms)
    init_ms, first_ms = statistics.median(inits), statistics.median(firsts)
    memory_mb = function.memory_mb
    return FitRow(
        memory_mb=memory_mb,
        vcpus=round(launch.cpu.vcpus, 3),
        cpu=launch.cpu.describe(launch.init_burst),
        cold_start_ms=round(statistics.median(colds), 1),
        init_ms=round(init_ms, 1),
        first_invoke_ms=round(first_ms, 1),
        warm_ms=round(warm_ms, 2),
        warm_cost_per_million=round(billed_cost(memory_mb, warm_ms) * 1_000_000, 4),
        cold_start_cost=billed_cost(memory_mb, init_ms + first_ms),
        peak_rss_mb=round(max(peaks), 1),
    )

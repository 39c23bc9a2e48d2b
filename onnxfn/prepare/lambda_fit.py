"""What ``onnxfn add`` tells about a model in Lambda before it deploys: the memory to ask for, the
package budget, and whether loading it at init fits Lambda's init window."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from contract.limits import IMAGE_LIMIT_BYTES, ZIP_LIMIT_BYTES
from onnxfn.prepare.sizing import recommend_memory_mb
from onnxfn.prepare.sources import Source
from onnxfn.prepare.validation import Feeds, make_batch

MB = 1024 * 1024
ZIP_LIMIT = ZIP_LIMIT_BYTES
IMAGE_LIMIT = IMAGE_LIMIT_BYTES
INIT_LIMIT_S = 10.0
S3_MB_PER_S = 60.0  # a conservative GetObject throughput inside a Lambda function, for the init estimate


def worst_case(source: Source, samples: list[Feeds], max_batch: int) -> Feeds:
    """A full batch of the largest inputs the manifest allows: what memory must be sized for."""
    if source.tokenize is not None and source.pipeline is not None:
        longest = " ".join(["token"] * 4 * int(source.pipeline.get("max_length", 256)))
        return source.tokenize([longest] * max_batch)
    return make_batch(samples, max_batch, batch_axes(source.inputs))


def batch_axes(specs: list[dict[str, Any]]) -> dict[str, int | None]:
    return {spec["name"]: spec.get("batch_axis", 0) for spec in specs}


def lambda_fit(root: Path, artifact_bytes: int, peak_mb: float, session_s: float, packaging: str) -> dict[str, Any]:
    """Package budget, recommended memory, and whether an eager load fits Lambda's 10 s init."""
    # the app's layer cache: beside the artifact folder, or this checkout's (an app folder of its own)
    caches = [root.parent / ".cache" / "layers", Path(__file__).resolve().parents[2] / ".cache" / "layers"]
    layers = [
        folder
        for cache in caches
        for folder in sorted(cache.glob("x86_64-py3.12-*/python"))
        if (folder.parent / "onnxfn-layer.json").exists()
        and '"onnxruntime"' in (folder.parent / "onnxfn-layer.json").read_text(errors="replace")
    ][:1]
    layer_bytes = sum(p.stat().st_size for p in layers[-1].rglob("*") if p.is_file()) if layers else None
    fetch_s = artifact_bytes / MB / S3_MB_PER_S
    eager_s = fetch_s + session_s
    warnings: list[str] = []
    try:
        # The store holds the fetched bytes while it creates the session: count them on top of the peak.
        memory = recommend_memory_mb(peak_mb + artifact_bytes / MB)
    except ValueError as exc:
        memory = 10240
        warnings.append(f"no Lambda memory size fits comfortably ({exc}); consider a smaller model")
    fit: dict[str, Any] = {
        "artifact_mb": round(artifact_bytes / MB, 2),
        "peak_rss_mb": round(peak_mb, 1),
        "recommended_memory_mb": memory,
        "eager_load_estimate_s": round(eager_s, 2),
        "packaging": packaging,
        "warnings": warnings,
    }
    limit = ZIP_LIMIT if packaging == "zip" else IMAGE_LIMIT
    if layer_bytes is not None:
        fit["layer_mb"] = round(layer_bytes / MB, 1)
        fit["package_budget"] = f"{layer_bytes / MB:.1f} MB of {limit / MB:.0f} MB ({packaging})"
        if layer_bytes > limit:
            fit["warnings"].append(f"the layer ({layer_bytes / MB:.0f} MB) is over the {packaging} limit")
    else:
        fit["package_budget"] = "layer not built yet (make synth builds and measures it)"
    if eager_s > INIT_LIMIT_S:
        fit["warnings"].append(
            f"an eager load (~{eager_s:.1f} s: fetch at {S3_MB_PER_S:.0f} MB/s + session) would not fit Lambda's "
            f"{INIT_LIMIT_S:.0f} s init; keep load_mode lazy or use provisioned concurrency"
        )
    return fit


def session_seconds(prepared: Path, optimization_level: str | None) -> float:
    """How long the function takes to create its session on the prepared model (as it does: no re-optimization)."""
    import onnxruntime as ort

    started = time.perf_counter()
    options = ort.SessionOptions()
    if optimization_level:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ort.InferenceSession(str(prepared), options, providers=["CPUExecutionProvider"])
    return time.perf_counter() - started

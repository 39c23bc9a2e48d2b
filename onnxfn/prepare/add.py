"""``onnxfn add``: source -> fp32 ONNX -> quantized -> pre-optimized -> validated -> artifact.

Everything is built in a staging folder; the artifact appears in ``model_artifacts/<name>/`` only
when the validation gate passes (rename into place), so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from contract.limits import IMAGE_LIMIT_BYTES, ZIP_LIMIT_BYTES
from contract.manifest import NAME_PATTERN, VERSION_PATTERN, Manifest
from onnxfn.artifacts import DEFAULT_ROOT, ArtifactExists, write_artifact
from onnxfn.prepare.calibration import load_calibration
from onnxfn.prepare.quantization import preoptimize, quantize
from onnxfn.prepare.sizing import peak_rss_mb, recommend_memory_mb
from onnxfn.prepare.sources import Source, SourceError, load_source
from onnxfn.prepare.validation import Thresholds, ValidationReport, evaluate

MB = 1024 * 1024
ZIP_LIMIT = ZIP_LIMIT_BYTES
IMAGE_LIMIT = IMAGE_LIMIT_BYTES
INIT_LIMIT_S = 10.0
S3_MB_PER_S = 60.0  # a conservative GetObject throughput inside a Lambda function, for the init estimate


class GateFailed(Exception):
    """The prepared model drifted past a threshold; nothing was written."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__("; ".join(report.failures))
        self.report = report


@dataclass
class AddOptions:
    quantize: str = "dynamic"
    optimize: str = "extended"
    calibration: Path | None = None
    samples: Path | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    trust_pickle: bool = False
    input_name: str = "input"
    input_shape: list[int] | None = None
    labels: list[str] | None = None
    exclude_nodes: list[str] = field(default_factory=list)
    version: str = "1"
    packaging: str = "zip"
    force: bool = False
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    runs: int = 10


@dataclass
class AddResult:
    manifest: Manifest
    report: ValidationReport
    path: Path
    lambda_fit: dict[str, Any]


Step = Callable[[str], None]


def _quantize(source: Source, staging: Path, options: AddOptions) -> tuple[Path, dict[str, Any]]:
    """The quantized model; a BERT checkpoint's dynamic recipe keeps the layers that int8 breaks in fp32."""
    calibration = None
    if options.calibration is not None:
        calibration = load_calibration(options.calibration, source.model_inputs, tokenize=source.tokenize)
    target = staging / "quantized.onnx"
    src, excluded = source.onnx_path, list(options.exclude_nodes)
    facts: dict[str, Any] = {}
    if source.kind == "bert" and options.quantize == "dynamic":
        from onnxfn.build.bert import MINILM_FP32_MATMULS, WORD_EMBEDDINGS_GATHER
        from onnxfn.build.quantize import quantize_gather_rows_int8

        model = onnx.load(str(src))
        names = {n.name for n in model.graph.node}
        excluded += [n for n in MINILM_FP32_MATMULS if n in names and n not in excluded]
        if WORD_EMBEDDINGS_GATHER in names:
            model = quantize_gather_rows_int8(model, WORD_EMBEDDINGS_GATHER)
            facts["word_embeddings"] = "int8, one symmetric fp32 scale per row"
        src = staging / "rows-int8.onnx"
        onnx.save(model, str(src))
    facts.update(quantize(src, target, options.quantize, calibration=calibration, exclude_nodes=excluded or None))
    facts["original_bytes"] = source.onnx_path.stat().st_size
    return target, facts


def _samples(source: Source, options: AddOptions) -> list[dict[str, np.ndarray]]:
    if options.samples is not None:
        return load_calibration(options.samples, source.model_inputs, tokenize=source.tokenize)
    if source.samples:
        return source.samples
    from onnxfn.prepare.sources import random_samples

    return random_samples(source.inputs)


def _worst_case(source: Source, samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A full batch of the largest inputs the manifest allows: what memory must be sized for."""
    if source.tokenize is not None and source.pipeline is not None:
        longest = " ".join(["token"] * 4 * int(source.pipeline.get("max_length", 256)))
        return source.tokenize([longest] * source.max_batch)
    rows = {name: np.concatenate([s[name] for s in samples]) for name in samples[0]}
    count = next(iter(rows.values())).shape[0]
    index = np.arange(source.max_batch) % max(count, 1)
    return {name: array[index] for name, array in rows.items()}


def _lambda_fit(root: Path, artifact_bytes: int, peak_mb: float, session_s: float, packaging: str) -> dict[str, Any]:
    """Package budget, recommended memory, and whether an eager load fits Lambda's 10 s init."""
    layers = sorted((root.parent / ".cache" / "layers").glob("x86_64-py3.12-*/python"))
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


def add_model(
    source_path: Path,
    name: str,
    options: AddOptions,
    *,
    root: Path = DEFAULT_ROOT,
    step: Step | None = None,
    progress: Step | None = None,
) -> AddResult:
    """Prepare ``source_path`` as ``root/name``; raise without writing anything when a step fails."""
    say = step or (lambda _: None)
    if not NAME_PATTERN.match(name):
        raise SourceError(f"--name {name!r}: expected lowercase letters, digits, '-' or '_' (max 63), starting alnum")
    if not VERSION_PATTERN.match(options.version):
        raise SourceError(f"--version {options.version!r}: expected letters, digits, '.', '_' or '-' (max 63)")
    if (root / name).exists() and not options.force:
        raise ArtifactExists(f"{root / name} already exists; pass --force to replace it")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.add.", dir=root))
    try:
        say(f"loading {source_path}")
        source = load_source(
            source_path,
            staging,
            trust_pickle=options.trust_pickle,
            input_name=options.input_name,
            input_shape=options.input_shape,
            labels=options.labels,
        )
        say(f"quantizing ({options.quantize})")
        quantized, quantization = _quantize(source, staging, options)
        prepared = staging / "model.onnx"
        if options.optimize == "none":
            shutil.copyfile(quantized, prepared)
            optimization_level = None
        else:
            say(f"pre-optimizing ({options.optimize})")
            optimization_level = preoptimize(quantized, prepared, options.optimize)["optimization_level"]
        say("validating against the original")
        samples = _samples(source, options)
        try:
            report = evaluate(
                source.onnx_path,
                prepared,
                samples,
                source.task,
                options.thresholds,
                batch_sizes=options.batch_sizes,
                runs=options.runs,
                progress=progress,
            )
        except Exception as exc:  # onnxruntime rejected the samples or the prepared graph
            raise SourceError(f"validation could not run the models: {str(exc).splitlines()[0][:300]}") from exc
        if not report.passed:
            raise GateFailed(report)
        say("measuring memory and load time")
        peak = peak_rss_mb(prepared, _worst_case(source, samples))
        started = time.perf_counter()
        import onnxruntime as ort

        options_ort = ort.SessionOptions()
        if optimization_level:
            options_ort.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        ort.InferenceSession(str(prepared), options_ort, providers=["CPUExecutionProvider"])
        session_s = time.perf_counter() - started
        files = {"model.onnx": (prepared, "model"), **source.files}
        artifact_bytes = sum(path.stat().st_size for path, _ in files.values())
        fit = _lambda_fit(root, artifact_bytes, peak, session_s, options.packaging)
        say("writing report")
        from onnxfn.prepare.report import write_report

        report_dir = staging / "report"
        report_dir.mkdir()
        facts = {
            "source": str(source_path),
            "kind": source.kind,
            "quantization": options.quantize,
            "optimization": optimization_level or "none",
            **fit,
            **source.facts,
        }
        extras = {p.name: p for p in write_report(report, report_dir, name=name, facts=facts)}
        spec = {
            "version": options.version,
            "description": f"{source.kind} model prepared by onnxfn add from {source_path.name}",
            "inputs": source.inputs,
            "outputs": source.outputs,
            "limits": {"max_batch": source.max_batch, "max_elements": max(source.max_batch, 1) * 65536},
            "pipeline": source.pipeline,
            "quantization": json.loads(json.dumps(quantization, default=str)),
            "validation": {
                "samples": report.samples,
                "drift": report.drift,
                "latency_ms": {
                    k: {str(t): {str(b): ms for b, ms in v.items()} for t, v in th.items()}
                    for k, th in report.latency_ms.items()
                },
                "original_bytes": report.original_bytes,
                "prepared_bytes": report.prepared_bytes,
                "thresholds": asdict(options.thresholds),
                "lambda": fit,
            },
            "optimization_level": optimization_level,
        }
        manifest = write_artifact(name, files, spec, root=root, force=options.force, extras=extras)
        return AddResult(manifest=manifest, report=report, path=root / name, lambda_fit=fit)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""``onnxfn add``: source -> fp32 ONNX -> quantized -> pre-optimized -> validated -> artifact.

Everything is built in a staging folder; the artifact appears in ``model_artifacts/<name>/`` only
when the validation gate passes (rename into place), so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import math
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
from contract.manifest import NAME_PATTERN, VERSION_PATTERN, Manifest, ManifestError
from onnxfn.artifacts import DEFAULT_ROOT, ArtifactExists, draft_manifest, write_artifact
from onnxfn.prepare.calibration import load_calibration
from onnxfn.prepare.quantization import preoptimize, quantize
from onnxfn.prepare.sizing import peak_rss_mb, recommend_memory_mb
from onnxfn.prepare.sources import Source, SourceError, load_source
from onnxfn.prepare.validation import Feeds, Task, Thresholds, ValidationReport, evaluate

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
    description: str | None = None
    max_batch: int | None = None  # rows per request; default: the source's (64)
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
        from onnxfn.prepare.bert import MINILM_FP32_MATMULS, WORD_EMBEDDINGS_GATHER
        from onnxfn.prepare.int8 import quantize_gather_rows_int8

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


def _samples(source: Source, options: AddOptions) -> tuple[list[Feeds], list[Feeds] | None]:
    """The model feeds latency is timed on, and the client inputs the gate sends through the deployed
    pipeline (``None`` when only feeds are known: a text model given tensor samples)."""
    if options.samples is None and source.samples:
        feeds, texts = source.samples, source.texts
    elif options.samples is None:
        from onnxfn.prepare.sources import random_samples

        feeds, texts = random_samples(source.inputs), []
    else:
        texts = []
        tokenize = source.tokenize
        if tokenize is not None:
            # Each call of the tokenizer makes one feed dict: keep its texts, the client's side of it.
            def tokenize_and_keep(batch: list[str]) -> Feeds:
                texts.append(list(batch))
                return tokenize(batch)

        feeds = load_calibration(options.samples, source.model_inputs, tokenize=tokenize_and_keep if tokenize else None)
    if source.tokenize is None:
        return feeds, feeds
    if len(texts) != len(feeds):
        return feeds, None
    name = source.inputs[0]["name"]
    return feeds, [{name: np.array(batch, dtype=object)} for batch in texts]


def _deployed_task(source: Source, draft: Manifest, files: dict[str, tuple[Path, str]]) -> Task:
    """The gate's task: drift measured on what the deployed pipeline (``handlers/runtime/pipelines``)
    returns to a client, built on the original and on the prepared session alike."""
    from handlers.runtime.pipelines import build_pipeline

    blobs = {relative: path.read_bytes() for relative, (path, role) in files.items() if role != "model"}
    output = {"embedder": draft.outputs[0].name, "classifier": "probabilities"}.get(
        source.task.kind, source.task.output
    )

    def score(session: Any) -> Callable[[Feeds], np.ndarray]:
        pipeline = build_pipeline(draft, session, blobs)
        return lambda inputs: np.asarray(pipeline.run(inputs, [output])[output])

    return Task(kind=source.task.kind, output=output, score=score)


def _worst_case(source: Source, samples: list[Feeds], max_batch: int) -> Feeds:
    """A full batch of the largest inputs the manifest allows: what memory must be sized for."""
    if source.tokenize is not None and source.pipeline is not None:
        longest = " ".join(["token"] * 4 * int(source.pipeline.get("max_length", 256)))
        return source.tokenize([longest] * max_batch)
    rows = {name: np.concatenate([s[name] for s in samples]) for name in samples[0]}
    count = next(iter(rows.values())).shape[0]
    index = np.arange(max_batch) % max(count, 1)
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


def _check_request(name: str, options: AddOptions, root: Path) -> None:
    if not NAME_PATTERN.match(name):
        raise SourceError(f"--name {name!r}: expected lowercase letters, digits, '-' or '_' (max 63), starting alnum")
    if not VERSION_PATTERN.match(options.version):
        raise SourceError(f"--version {options.version!r}: expected letters, digits, '.', '_' or '-' (max 63)")
    if options.max_batch is not None and options.max_batch < 1:
        raise SourceError(f"--max-batch {options.max_batch}: expected a whole number of rows ≥ 1")
    if (root / name).exists() and not options.force:
        raise ArtifactExists(f"{root / name} already exists; pass --force to replace it")


def _prepare(source: Source, staging: Path, options: AddOptions, say: Step) -> tuple[Path, dict[str, Any], str | None]:
    """Quantize, then pre-optimize: the model to deploy, its quantization facts and optimization level."""
    say(f"quantizing ({options.quantize})")
    quantized, quantization = _quantize(source, staging, options)
    prepared = staging / "model.onnx"
    if options.optimize == "none":
        shutil.copyfile(quantized, prepared)
        return prepared, quantization, None
    say(f"pre-optimizing ({options.optimize})")
    return prepared, quantization, preoptimize(quantized, prepared, options.optimize)["optimization_level"]


def _limits(source: Source, max_batch: int) -> dict[str, int]:
    """A request's bounds. Numeric inputs of fixed row shape bound the elements exactly; text and
    dynamic dimensions get 65,536 elements a row (the payload limit bounds them first)."""
    per_row = 0
    for spec in source.inputs:
        row = spec["shape"][1:]
        if spec["datatype"] == "BYTES" or any(d < 0 for d in row):
            per_row = 65536
            break
        per_row += math.prod(row)
    return {"max_batch": max_batch, "max_elements": max_batch * max(per_row, 1)}


def _spec(
    source: Source, source_path: Path, options: AddOptions, quantization: dict[str, Any], level: str | None
) -> dict[str, Any]:
    """The manifest fields ``onnxfn add`` decides; ``validation`` is added once the gate has passed."""
    return {
        "version": options.version,
        "description": options.description or f"{source.kind} model prepared by onnxfn add from {source_path.name}",
        "inputs": source.inputs,
        "outputs": source.outputs,
        "limits": _limits(source, options.max_batch or source.max_batch),
        "pipeline": source.pipeline,
        "quantization": json.loads(json.dumps(quantization, default=str)),
        "optimization_level": level,
    }


def _gate(
    source: Source,
    original_and_prepared: tuple[Path, Path],
    draft: Manifest,
    files: dict[str, tuple[Path, str]],
    options: AddOptions,
    progress: Step | None,
) -> tuple[ValidationReport, list[Feeds]]:
    """Run the validation gate; raise ``GateFailed`` when a drift figure is past its threshold."""
    feeds, client = _samples(source, options)
    task = source.task if client is None else _deployed_task(source, draft, files)
    try:
        report = evaluate(
            *original_and_prepared,
            feeds,
            task,
            options.thresholds,
            batch_sizes=options.batch_sizes,
            runs=options.runs,
            progress=progress,
            drift_samples=client,
        )
    except ManifestError as exc:  # the deployed pipeline does not fit the model: a load would fail too
        raise SourceError(f"the model does not fit its pipeline: {exc}") from exc
    except Exception as exc:  # onnxruntime rejected the samples or the prepared graph
        raise SourceError(f"validation could not run the models: {str(exc).splitlines()[0][:300]}") from exc
    if not report.passed:
        raise GateFailed(report)
    return report, feeds


def _session_seconds(prepared: Path, optimization_level: str | None) -> float:
    """How long the function takes to create its session on the prepared model (as it does: no re-optimization)."""
    import onnxruntime as ort

    started = time.perf_counter()
    options = ort.SessionOptions()
    if optimization_level:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ort.InferenceSession(str(prepared), options, providers=["CPUExecutionProvider"])
    return time.perf_counter() - started


def _validation(report: ValidationReport, options: AddOptions, fit: dict[str, Any]) -> dict[str, Any]:
    return {
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
    }


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
    _check_request(name, options, root)
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
        prepared, quantization, level = _prepare(source, staging, options, say)
        files = {"model.onnx": (prepared, "model"), **source.files}
        spec = _spec(source, source_path, options, quantization, level)
        say("validating the deployed pipeline against the original")
        draft = draft_manifest(name, files, spec)
        report, feeds = _gate(source, (source.onnx_path, prepared), draft, files, options, progress)
        say("measuring memory and load time")
        peak = peak_rss_mb(prepared, _worst_case(source, feeds, draft.limits.max_batch))
        artifact_bytes = sum(path.stat().st_size for path, _ in files.values())
        fit = _lambda_fit(root, artifact_bytes, peak, _session_seconds(prepared, level), options.packaging)
        say("writing report")
        from onnxfn.prepare.report import write_report

        report_dir = staging / "report"
        report_dir.mkdir()
        facts = {"source": str(source_path), "kind": source.kind, "quantization": options.quantize}
        facts |= {"optimization": level or "none", **fit, **source.facts}
        extras = {p.name: p for p in write_report(report, report_dir, name=name, facts=facts)}
        spec["validation"] = _validation(report, options, fit)
        manifest = write_artifact(name, files, spec, root=root, force=options.force, extras=extras)
        return AddResult(manifest=manifest, report=report, path=root / name, lambda_fit=fit)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

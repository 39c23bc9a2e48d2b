"""``onnxfn add``: source -> fp32 ONNX -> quantized -> pre-optimized -> validated -> artifact.

Everything is built in a staging folder; the artifact appears in ``model_artifacts/<name>/`` only
when the validation gate passes (rename into place), so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from contract.manifest import NAME_PATTERN, VERSION_PATTERN, Manifest
from onnxfn.artifacts import DEFAULT_ROOT, ArtifactExists, draft_manifest, write_artifact
from onnxfn.prepare.bert import MINILM_FP32_MATMULS, WORD_EMBEDDINGS_GATHER
from onnxfn.prepare.blockwise import BlockOptions
from onnxfn.prepare.calibration import load_calibration
from onnxfn.prepare.gate import GateFailed, gate_samples, run_gate
from onnxfn.prepare.int8 import quantize_gather_rows_int8
from onnxfn.prepare.lambda_fit import batch_axes, lambda_fit, session_seconds, worst_case
from onnxfn.prepare.layout import apply_batch_axes, fixed_batch
from onnxfn.prepare.quantization import QuantizationError, preoptimize, quantize
from onnxfn.prepare.recipes import choose, explain_zero
from onnxfn.prepare.sizing import peak_rss_mb
from onnxfn.prepare.sources import Source, SourceError, SourceOptions, load_source
from onnxfn.prepare.static import WEIGHT_OPS
from onnxfn.prepare.validation import Feeds, Thresholds, ValidationReport


@dataclass
class AddOptions:
    quantize: str = "auto"
    optimize: str = "extended"
    calibration: Path | None = None
    samples: Path | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    trust_pickle: bool = False
    input_name: str | None = None  # the input's name for a scikit-learn model (default "input")
    input_shape: list[int] | None = None
    labels: list[str] | None = None
    module_path: Path | None = None  # the file defining the classes a pickle names (--module-path)
    pipeline: Path | None = None  # --pipeline: a pipeline .json, or a custom pipeline .py
    exclude_nodes: list[str] = field(default_factory=list)
    block: dict[str, Any] = field(default_factory=dict)  # --bits, --block-size, ...: BlockOptions fields given
    prune: float | None = None  # --prune: the fraction of feed-forward neurons to remove
    prune_heads: float | None = None  # --prune-heads: the fraction of attention heads to remove
    version: str = "1"
    description: str | None = None
    max_batch: int | None = None  # rows per request; default: the source's (64)
    packaging: str = "zip"
    force: bool = False
    batch_sizes: tuple[int, ...] | None = None  # latency batches; default (1, 8, 32) as the model allows
    batch_axes: dict[str, int | None] = field(default_factory=dict)  # --batch-axis: tensor -> axis or None
    runs: int = 10


@dataclass
class AddResult:
    manifest: Manifest
    report: ValidationReport
    path: Path
    lambda_fit: dict[str, Any]


Step = Callable[[str], None]


@dataclass(frozen=True)
class Prepared:
    """The model to deploy, gated: its file, optimization level, the gate's report, the artifact's
    files, the manifest fields decided so far and the draft manifest they make."""

    path: Path
    level: str | None
    report: ValidationReport
    files: dict[str, tuple[Path, str]]
    spec: dict[str, Any]
    draft: Manifest


def _quantize(
    source: Source, fp32: Path, staging: Path, options: AddOptions, feeds: list[Feeds], say: Step
) -> tuple[Path, dict[str, Any]]:
    """The quantized model and the facts of it. ``auto`` chooses the mode from the graph
    (``onnxfn.prepare.recipes``) and calibrates a static recipe on the validation samples; a BERT
    checkpoint's dynamic recipe keeps the layers that int8 breaks in fp32."""
    model = onnx.load(str(fp32))
    mode, reason = options.quantize, ""
    op_types: tuple[str, ...] = WEIGHT_OPS
    if mode == "auto":
        recipe = choose(model, source.kind, BlockOptions(**options.block))
        mode, op_types, reason = recipe.mode, recipe.op_types or WEIGHT_OPS, recipe.reason
    if options.block and mode != "blockwise":
        flags = ", ".join("--" + key.replace("_", "-") for key in options.block)
        raise QuantizationError(f"{flags}: for --quantize blockwise only; this model is quantized {mode}")
    say(f"quantizing ({options.quantize}{' → ' + mode if options.quantize == 'auto' else ''})")
    calibration = None
    if options.calibration is not None:
        calibration = load_calibration(options.calibration, source.model_inputs, tokenize=source.tokenize)
    elif mode == "static" and options.quantize == "auto":
        calibration = feeds
    target = staging / "quantized.onnx"
    src, excluded = fp32, list(options.exclude_nodes)
    facts: dict[str, Any] = {}
    if source.kind == "bert" and mode == "dynamic":
        names = {n.name for n in model.graph.node}
        excluded += [n for n in MINILM_FP32_MATMULS if n in names and n not in excluded]
        if WORD_EMBEDDINGS_GATHER in names:
            model = quantize_gather_rows_int8(model, WORD_EMBEDDINGS_GATHER)
            facts["word_embeddings"] = "int8, one symmetric fp32 scale per row"
        src = staging / "rows-int8.onnx"
        onnx.save(model, str(src))
    facts.update(
        quantize(
            src,
            target,
            mode,
            calibration=calibration,
            exclude_nodes=excluded or None,
            op_types=op_types,
            block=BlockOptions(**options.block),
        )
    )
    facts["recipe"] = options.quantize
    if options.quantize == "none":
        reason = "not asked for (--quantize none)"
    elif mode in ("dynamic", "static", "blockwise") and not facts.get("quantized_nodes"):
        reason = reason if facts.get("embedding_nodes") else explain_zero(mode, model)
    if reason:
        facts["reason"] = reason
    facts["original_bytes"] = source.onnx_path.stat().st_size
    return target, facts


def _check_request(name: str, options: AddOptions, root: Path) -> None:
    if not NAME_PATTERN.match(name):
        raise SourceError(f"--name {name!r}: expected lowercase letters, digits, '-' or '_' (max 63), starting alnum")
    if not VERSION_PATTERN.match(options.version):
        raise SourceError(f"--version {options.version!r}: expected letters, digits, '.', '_' or '-' (max 63)")
    if options.max_batch is not None and options.max_batch < 1:
        raise SourceError(f"--max-batch {options.max_batch}: expected a whole number of rows ≥ 1")
    if options.prune is not None and not 0 < options.prune < 1:
        raise SourceError(f"--prune {options.prune:g}: expected a fraction of the neurons, above 0 and below 1")
    if options.prune_heads is not None and not 0 < options.prune_heads < 1:
        raise SourceError(
            f"--prune-heads {options.prune_heads:g}: expected a fraction of the heads, above 0 and below 1"
        )
    if options.block and options.quantize not in ("auto", "blockwise"):
        flags = ", ".join("--" + key.replace("_", "-") for key in options.block)
        raise QuantizationError(f"{flags}: for --quantize blockwise only, not {options.quantize}")
    problems = BlockOptions(**options.block).problems()
    if problems:
        raise QuantizationError("; ".join(problems))
    if (root / name).exists() and not options.force:
        raise ArtifactExists(f"{root / name} already exists; pass --force to replace it")


def _prune(source: Source, staging: Path, options: AddOptions, feeds: list[Feeds], say: Step) -> dict[str, Any] | None:
    """``--prune``: write the pruned fp32 model to ``staging/pruned.onnx`` and return its facts.
    Neurons are ranked on ``--calibration`` when given, else on the validation samples."""
    if options.prune is None and options.prune_heads is None:
        return None
    from onnxfn.prepare.bert import save_model
    from onnxfn.prepare.pruning import prune_feed_forward

    parts = [f"{options.prune:g} of the feed-forward neurons"] if options.prune is not None else []
    parts += [f"{options.prune_heads:g} of the attention heads"] if options.prune_heads is not None else []
    say(f"pruning {' and '.join(parts)}")
    described = "the validation samples"
    if options.calibration is not None:
        feeds = load_calibration(options.calibration, source.model_inputs, tokenize=source.tokenize)
        described = f"--calibration {options.calibration.name}"
    model = onnx.load(str(source.onnx_path))
    pruned, facts = prune_feed_forward(model, options.prune, feeds, described, heads=options.prune_heads)
    save_model(pruned, staging / "pruned.onnx")
    return facts


def _prepare(
    source: Source, staging: Path, options: AddOptions, feeds: list[Feeds], say: Step, pruned: bool = False
) -> tuple[Path, dict[str, Any], str | None]:
    """Quantize, then pre-optimize: the model to deploy, its quantization facts and optimization level."""
    fp32 = staging / "pruned.onnx" if pruned else source.onnx_path
    quantized, quantization = _quantize(source, fp32, staging, options, feeds, say)
    prepared = staging / "model.onnx"
    if options.optimize == "none":
        shutil.copyfile(quantized, prepared)
        return prepared, quantization, None
    say(f"pre-optimizing ({options.optimize})")
    return prepared, quantization, preoptimize(quantized, prepared, options.optimize)["optimization_level"]


def _limits(source: Source, max_batch: int) -> dict[str, int]:
    """A request's bounds. Numeric inputs of fixed row shape bound the elements exactly; text and
    dynamic dimensions get 65,536 elements a row (the payload limit bounds them first); a tensor
    without a batch axis counts once."""
    per_row, whole = 0, 0
    for spec in source.inputs:
        axis = spec.get("batch_axis", 0)
        shape = list(spec["shape"])
        if axis is None:
            whole += math.prod(abs(d) for d in shape) if all(d > 0 for d in shape) else 65536
            continue
        row = shape[:axis] + shape[axis + 1 :]
        if spec["datatype"] == "BYTES" or any(d < 0 for d in row):
            per_row = 65536
            break
        per_row += math.prod(row)
    return {"max_batch": max_batch, "max_elements": max_batch * max(per_row, 1) + whole}


def _layout(source: Source, options: AddOptions) -> tuple[int, tuple[int, ...]]:
    """The rows a request may carry and the batch sizes latency is timed at, as the model allows: a
    model exported with a fixed batch takes only that batch; one whose inputs have no batch axis, one."""
    specs = [*source.inputs, *source.outputs]
    unknown = sorted(set(options.batch_axes) - {s["name"] for s in specs})
    if unknown:
        raise SourceError(f"--batch-axis names no tensor of this model: {', '.join(unknown)}")
    apply_batch_axes(specs, options.batch_axes)
    fixed = fixed_batch(source.inputs)
    batched = any(s.get("batch_axis", 0) is not None for s in source.inputs)
    max_batch = options.max_batch or source.max_batch
    allowed = (fixed,) if fixed else (1,) if not batched else None
    if allowed:
        max_batch = allowed[0]
    sizes = options.batch_sizes or allowed or (1, 8, 32)
    if allowed and set(sizes) - set(allowed):
        raise SourceError(f"--batch-sizes {','.join(map(str, sizes))}: this model takes batches of {allowed[0]} only")
    if options.max_batch and options.max_batch > max_batch:
        raise SourceError(f"--max-batch {options.max_batch}: this model takes batches of {max_batch} at most")
    return max_batch, tuple(sizes)


def _spec(
    source: Source, source_path: Path, options: AddOptions, quantization: dict[str, Any], level: str | None
) -> dict[str, Any]:
    """The manifest fields ``onnxfn add`` decides; ``validation`` is added once the gate has passed."""
    return {
        "version": options.version,
        "description": options.description or f"{source.kind} model prepared by onnxfn add from {source_path.name}",
        "inputs": source.inputs,
        "outputs": source.outputs,
        "limits": _limits(source, source.max_batch),
        "pipeline": source.pipeline,
        "quantization": json.loads(json.dumps(quantization, default=str)),
        "optimization_level": level,
    }


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


def _prepare_and_gate(
    name: str,
    source: Source,
    source_path: Path,
    staging: Path,
    options: AddOptions,
    samples: tuple[list[Feeds], list[Feeds] | None],
    say: Step,
    progress: Step | None,
) -> Prepared:
    """Quantize, pre-optimize and gate. When ``auto`` chose an int8 recipe that the gate refuses, the
    model is prepared again in fp32 and the manifest says why; an explicit mode that fails is an error."""
    refused = ""
    pruning = _prune(source, staging, options, samples[0], say)
    while True:
        prepared, quantization, level = _prepare(source, staging, options, samples[0], say, pruning is not None)
        if refused:
            quantization |= {"recipe": "auto", "reason": refused}
        files = {"model.onnx": (prepared, "model"), **source.files}
        spec = _spec(source, source_path, options, quantization, level) | ({"pruning": pruning} if pruning else {})
        say("validating the deployed pipeline against the original")
        draft = draft_manifest(name, files, spec)
        try:
            report = run_gate(
                source,
                (source.onnx_path, prepared),
                draft,
                files,
                options.thresholds,
                samples,
                batch_sizes=options.batch_sizes or (1,),
                runs=options.runs,
                batch_axes=batch_axes(source.inputs),
                progress=progress,
            )
        except GateFailed as failed:
            if options.quantize != "auto" or quantization.get("method") == "none":
                raise
            refused = (
                f"auto chose {quantization['method']} quantization, which failed the validation gate ({failed}); "
                "kept fp32"
            )
            say(refused)
            options = replace(options, quantize="none", block={})  # the block flags were for the recipe refused
            continue
        return Prepared(path=prepared, level=level, report=report, files=files, spec=spec, draft=draft)


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
            SourceOptions(
                trust_pickle=options.trust_pickle,
                input_name=options.input_name,
                input_shape=options.input_shape,
                labels=options.labels,
                module_path=options.module_path,
            ),
        )
        source.max_batch, sizes = _layout(source, options)
        if options.pipeline is not None:
            from onnxfn.prepare.pipeline_source import apply_pipeline

            apply_pipeline(source, options.pipeline, staging)
        options = replace(options, batch_sizes=sizes)
        samples = gate_samples(source, options.samples)
        done = _prepare_and_gate(name, source, source_path, staging, options, samples, say, progress)
        prepared, level, report, files, spec, draft = (
            done.path,
            done.level,
            done.report,
            done.files,
            done.spec,
            done.draft,
        )
        feeds = samples[0]
        say("measuring memory and load time")
        peak = peak_rss_mb(prepared, worst_case(source, feeds, draft.limits.max_batch))
        artifact_bytes = sum(path.stat().st_size for path, _ in files.values())
        fit = lambda_fit(root, artifact_bytes, peak, session_seconds(prepared, level), options.packaging)
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

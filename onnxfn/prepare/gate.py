"""The validation gate of ``onnxfn add``: the prepared model against the original, through the pipeline
that deploys, on the samples a user gave (or generated ones); nothing is written when it fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from contract.manifest import Manifest, ManifestError
from onnxfn.prepare.calibration import load_calibration
from onnxfn.prepare.sources import Source, SourceError
from onnxfn.prepare.validation import Feeds, Task, Thresholds, ValidationReport, evaluate


class GateFailed(Exception):
    """The prepared model drifted past a threshold; nothing was written."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__("; ".join(report.failures))
        self.report = report


def gate_samples(source: Source, given: Path | None) -> tuple[list[Feeds], list[Feeds] | None]:
    """The model feeds latency is timed on, and the client inputs the gate sends through the deployed
    pipeline (``None`` when only feeds are known: a text model given tensor samples)."""
    if source.pipeline is not None and source.pipeline.get("kind") in PREPROCESSED:
        return _preprocessed_samples(source, given)
    if given is None and source.samples:
        feeds, texts = source.samples, source.texts
    elif given is None:
        from onnxfn.prepare.layout import random_samples

        feeds, texts = random_samples(source.inputs), []
    elif given.suffix.lower() in REQUEST_FILES:
        return request_samples(source, given)
    else:
        texts = []
        tokenize = source.tokenize
        if tokenize is not None:
            # Each call of the tokenizer makes one feed dict: keep its texts, the client's side of it.
            def tokenize_and_keep(batch: list[str]) -> Feeds:
                texts.append(list(batch))
                return tokenize(batch)

        feeds = load_calibration(given, source.model_inputs, tokenize=tokenize_and_keep if tokenize else None)
    if source.tokenize is None:
        return feeds, feeds
    if len(texts) != len(feeds):
        return feeds, None
    name = source.inputs[0]["name"]
    return feeds, [{name: np.array(batch, dtype=object)} for batch in texts]


# Files of requests, read as the S3 batch path reads them: OIP infer requests, V1 requests or instances,
# bare objects keyed by input name, plain text for a text model; one record a line.
REQUEST_FILES = (".jsonl", ".ndjson", ".json")
ROWS_PER_FEED = 8


def client_manifest(source: Source) -> Manifest:
    """The manifest the function will serve ``source`` with, before its files exist (placeholders)."""
    files = [{"path": "model.onnx", "role": "model", "sha256": "0" * 64, "bytes": 1}]
    files += [{"path": name, "role": role, "sha256": "0" * 64, "bytes": 1} for name, (_, role) in source.files.items()]
    document = {
        "schema_version": 1,
        "name": "samples",
        "version": "1",
        "files": files,
        "onnx": {"opset": 17},
        "inputs": source.inputs,
        "outputs": source.outputs,
        "limits": {"max_batch": 1 << 20, "max_elements": 1 << 40},
        "pipeline": source.pipeline,
    }
    return Manifest.from_dict(document)


def request_samples(source: Source, path: Path) -> tuple[list[Feeds], list[Feeds]]:
    """Feeds and client inputs from a file of requests, each line checked by the function's own codecs
    (a bad line is an error naming it); a batch-first model's rows are stacked eight at a time."""
    from handlers.runtime import rows as rowlib
    from handlers.runtime.errors import OnnxfnError

    manifest = client_manifest(source)
    records: list[rowlib.Row] = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(rowlib.row_from_line(number, line, manifest))
            except OnnxfnError as exc:
                raise SourceError(f"--samples {path.name} line {number}: {exc.message}") from exc
            if len(records) >= 512:
                break
    if not records:
        raise SourceError(f"--samples {path.name}: no records; expected one request a line")
    groups: list[list[rowlib.Row]] = []
    for row in records:
        if manifest.batch_first and groups and len(groups[-1]) < ROWS_PER_FEED and _same(groups[-1][0], row):
            groups[-1].append(row)
        else:
            groups.append([row])
    client = [
        {
            name: np.concatenate([r.inputs[name] for r in group]) if len(group) > 1 else group[0].inputs[name]
            for name in group[0].inputs
        }
        for group in groups
    ]
    if source.tokenize is None:
        return client, client
    name = source.inputs[0]["name"]
    texts = [[t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in c[name].reshape(-1)] for c in client]
    return [source.tokenize(batch) for batch in texts], [{name: np.array(b, dtype=object)} for b in texts]


def _same(a: Any, b: Any) -> bool:
    return bool(a.signature() == b.signature())


PREPROCESSED = ("image-classification", "image-detection", "custom")


def _preprocessed_samples(source: Source, given: Path | None) -> tuple[list[Feeds], list[Feeds]]:
    """Client samples of a pipeline that makes the feeds itself, and the feeds its ``preprocess`` makes
    of them on the original model (what latency is timed on)."""
    if given is not None:
        if given.suffix.lower() not in REQUEST_FILES:
            raise SourceError(f"--samples {given.name}: this pipeline takes a file of requests (.jsonl)")
        client = request_samples(source, given)[1]
    else:
        client = source.client_samples
    if not client:
        raise SourceError("this pipeline's samples cannot be generated: give --samples FILE (JSON Lines of requests)")
    client = [part for sample in client for part in _split(sample, source.max_batch)]
    import onnxruntime as ort

    from handlers.runtime.pipelines import build_pipeline

    session = ort.InferenceSession(str(source.onnx_path), providers=["CPUExecutionProvider"])
    blobs = {relative: path.read_bytes() for relative, (path, _) in source.files.items()}
    pipeline = build_pipeline(client_manifest(source), session, blobs)
    preprocess = getattr(pipeline, "preprocess")  # noqa: B009  (every preprocessed pipeline has one)
    try:
        feeds = [preprocess(sample) for sample in client]
    except Exception as exc:
        raise SourceError(f"the pipeline could not preprocess the samples: {type(exc).__name__}: {exc}") from exc
    return feeds, client


def _split(sample: Feeds, rows: int) -> list[Feeds]:
    """``sample`` in pieces of at most ``rows`` rows (axis 0 of every tensor): what one request may hold."""
    count = min((len(a) for a in sample.values() if a.ndim), default=1)
    if count <= rows:
        return [sample]
    return [{n: a[i : i + rows] if a.ndim else a for n, a in sample.items()} for i in range(0, count, rows)]


def deployed_task(source: Source, draft: Manifest, files: dict[str, tuple[Path, str]]) -> Task:
    """The gate's task: drift measured on what the deployed pipeline (``handlers/runtime/pipelines``)
    returns to a client, built on the original and on the prepared session alike."""
    from handlers.runtime.pipelines import build_pipeline

    blobs = {relative: path.read_bytes() for relative, (path, role) in files.items() if role != "model"}
    output = {"embedder": draft.outputs[0].name, "classifier": "probabilities"}.get(
        source.task.kind, source.task.output
    )

    def score(session: Any) -> Callable[[Feeds], np.ndarray]:
        pipeline = build_pipeline(draft, session, blobs)
        model_output = getattr(pipeline, "drift_output", None)
        if model_output is not None and source.task.kind == "raw":  # a model output, through preprocess
            return lambda inputs: np.asarray(pipeline.infer(pipeline.preprocess(inputs))[model_output])  # type: ignore[attr-defined]
        return lambda inputs: np.asarray(pipeline.run(inputs, [output])[output])

    return Task(kind=source.task.kind, output=output, score=score)


def run_gate(
    source: Source,
    original_and_prepared: tuple[Path, Path],
    draft: Manifest,
    files: dict[str, tuple[Path, str]],
    thresholds: Thresholds,
    samples: tuple[list[Feeds], list[Feeds] | None],
    *,
    batch_sizes: tuple[int, ...],
    runs: int,
    batch_axes: dict[str, int | None],
    progress: Callable[[str], None] | None,
) -> ValidationReport:
    """Run the validation gate; raise ``GateFailed`` when a drift figure is past its threshold."""
    feeds, client = samples
    task = source.task if client is None else deployed_task(source, draft, files)
    try:
        report = evaluate(
            *original_and_prepared,
            feeds,
            task,
            thresholds,
            batch_sizes=batch_sizes,
            batch_axes=batch_axes,
            runs=runs,
            progress=progress,
            drift_samples=client,
        )
    except ManifestError as exc:  # the deployed pipeline does not fit the model: a load would fail too
        raise SourceError(f"the model does not fit its pipeline: {exc}") from exc
    except Exception as exc:  # onnxruntime rejected the samples or the prepared graph
        raise SourceError(f"validation could not run the models: {str(exc).strip()[:2000]}") from exc
    if not report.passed:
        raise GateFailed(report)
    return report

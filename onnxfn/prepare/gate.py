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
    if given is None and source.samples:
        feeds, texts = source.samples, source.texts
    elif given is None:
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

        feeds = load_calibration(given, source.model_inputs, tokenize=tokenize_and_keep if tokenize else None)
    if source.tokenize is None:
        return feeds, feeds
    if len(texts) != len(feeds):
        return feeds, None
    name = source.inputs[0]["name"]
    return feeds, [{name: np.array(batch, dtype=object)} for batch in texts]


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
            runs=runs,
            progress=progress,
            drift_samples=client,
        )
    except ManifestError as exc:  # the deployed pipeline does not fit the model: a load would fail too
        raise SourceError(f"the model does not fit its pipeline: {exc}") from exc
    except Exception as exc:  # onnxruntime rejected the samples or the prepared graph
        raise SourceError(f"validation could not run the models: {str(exc).splitlines()[0][:300]}") from exc
    if not report.passed:
        raise GateFailed(report)
    return report

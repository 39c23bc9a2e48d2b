"""Validate a prepared (quantized, pre-optimized) ONNX model against the original it came from.

``evaluate`` runs both models on the same samples, measures how far the prepared outputs drift
and how fast each model is per batch size and thread count, and checks the drift against
thresholds: the gate ``onnxfn add`` passes before it writes an artifact. Sizing the Lambda
function is ``onnxfn.prepare.sizing``'s part.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxfn.prepare.sizing import model_bytes

Feeds = dict[str, np.ndarray]
Embed = Callable[[np.ndarray, Feeds], np.ndarray]
# A session -> what is compared for one sample: in ``onnxfn add``, the deployed pipeline's output.
Scorer = Callable[[Any], Callable[[Feeds], np.ndarray]]
Pairs = list[tuple[np.ndarray, np.ndarray, Feeds]]  # (original output, prepared output, feeds) per sample dict

KINDS = ("classifier", "embedder", "raw")
# The first runs of a shape allocate arenas and pick kernels; they say nothing about steady state.
WARMUP_RUNS = 2


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """Limits on drift; each has a CLI flag of the same meaning (see ``DriftCheck.flag``)."""

    min_top1_agreement: float = 0.99
    max_probability_diff: float = 0.05
    min_cosine_mean: float = 0.99
    min_cosine_min: float = 0.985
    max_abs_error: float = 0.05
    max_rel_error: float = 0.05  # relative to max |original| over all samples


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True, kw_only=True)
class Task:
    """What the model's output means, which decides how drift is measured.

    ``embed`` turns an embedder's output and its feeds into ``[B, D]`` vectors (pooling,
    normalization); without it the output must already be ``[B, D]``. ``score``, when given, is
    what runs each drift sample instead of ``session.run([output])``: ``onnxfn add`` passes the
    deployed pipeline (``handlers/runtime/pipelines``) built on each session, so ``output`` is then
    the name of the client-facing output it returns.
    """

    kind: str
    output: str
    softmax: bool = False
    embed: Embed | None = None
    score: Scorer | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task kind {self.kind!r}: expected one of {', '.join(KINDS)}")


@dataclass(frozen=True, kw_only=True)
class DriftCheck:
    """One drift figure held against its threshold."""

    key: str
    label: str
    value: float
    limit: float
    at_least: bool
    flag: str

    @property
    def passed(self) -> bool:
        # Written so that NaN, which compares false, fails.
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    @property
    def comparison(self) -> str:
        return "≥" if self.at_least else "≤"

    @property
    def value_text(self) -> str:
        text = f"{self.value:.4g}"
        # A failing 0.98499 must not read "0.985 < 0.985".
        if float(text) == self.limit and self.value != self.limit:
            text = f"{self.value:.8g}"
        return text

    @property
    def failure(self) -> str:
        """E.g. ``cosine min 0.971 < 0.985 (--min-cosine-min)``."""
        return f"{self.label} {self.value_text} {'<' if self.at_least else '>'} {self.limit:g} ({self.flag})"


# drift key -> (label, Thresholds attribute, value must be at least the limit, CLI flag)
_FIGURES: dict[str, tuple[str, str, bool, str]] = {
    "top1_agreement": ("top-1 agreement", "min_top1_agreement", True, "--min-top1"),
    "max_probability_diff": ("max probability diff", "max_probability_diff", False, "--max-prob-diff"),
    "cosine_mean": ("cosine mean", "min_cosine_mean", True, "--min-cosine-mean"),
    "cosine_min": ("cosine min", "min_cosine_min", True, "--min-cosine-min"),
    "max_abs_error": ("max abs error", "max_abs_error", False, "--max-abs-error"),
    "max_rel_error": ("max rel error", "max_rel_error", False, "--max-rel-error"),
}
# The drift figure that is the worst of ``per_sample``, so its limit is the one to draw on a histogram.
PER_SAMPLE_FIGURES = ("max_probability_diff", "cosine_min", "max_abs_error")


def drift_checks(drift: dict[str, float], thresholds: Thresholds) -> list[DriftCheck]:
    """The checks for the figures in ``drift``, in its order; unknown keys are not checked."""
    checks = []
    for key, value in drift.items():
        if key in _FIGURES:
            label, attribute, at_least, flag = _FIGURES[key]
            limit = float(getattr(thresholds, attribute))
            checks.append(DriftCheck(key=key, label=label, value=value, limit=limit, at_least=at_least, flag=flag))
    return checks


@dataclass
class ValidationReport:
    """What ``evaluate`` measured. ``thresholds`` is kept so a report can show its limits."""

    original_bytes: int
    prepared_bytes: int
    latency_ms: dict[str, dict[int, dict[int, float]]]  # {"original"|"prepared": {threads: {batch: median ms}}}
    drift: dict[str, float]
    per_sample: list[float]  # one drift value per compared row: |p diff| max, cosine or abs error max
    failures: list[str]
    samples: int  # rows compared
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def checks(self) -> list[DriftCheck]:
        return drift_checks(self.drift, self.thresholds)

    @property
    def per_sample_check(self) -> DriftCheck | None:
        """The check whose figure is the worst of ``per_sample``."""
        return next((c for c in self.checks if c.key in PER_SAMPLE_FIGURES), None)


def evaluate(
    original: Path,
    prepared: Path,
    samples: list[Feeds],
    task: Task,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    *,
    batch_sizes: tuple[int, ...] = (1, 8, 32),
    threads: tuple[int, ...] = (1, 2),
    runs: int = 10,
    progress: Callable[[str], None] | None = None,
    session_options: dict[str, Any] | None = None,
    drift_samples: list[Feeds] | None = None,
    batch_axes: Mapping[str, int | None] | None = None,
) -> ValidationReport:
    """Compare ``prepared`` with ``original`` on ``samples``: drift, latency and the threshold gate.

    Parameters
    ----------
    original, prepared
        The model as given and the model to deploy.
    samples
        Feed dicts, each with a batch dimension; shapes may differ between dicts (e.g. padded
        sequence lengths).
    task
        Which output to compare and how (classifier, embedder or raw tensor).
    thresholds
        Limits on drift; every figure beyond its limit becomes a failure naming its CLI flag.
    batch_sizes, threads
        Latency is measured for every pair, batches built from sample rows (tiled when short).
    runs
        Timed runs per measurement, after two warm-ups; the median is kept.
    progress
        Called with a description as each step (the comparison, each latency measurement) starts.
    session_options
        Attributes set on ``onnxruntime.SessionOptions`` for every session; the latency
        sessions then get their thread counts on top.
    drift_samples
        What drift is measured on when it is not ``samples`` (latency always uses ``samples``):
        with ``task.score``, the client's inputs of the deployed pipeline, e.g. texts.
    batch_axes
        Each input's batch axis, where latency batches are built (0 when not named; None: the tensor
        is taken whole from the first sample).

    Returns
    -------
    ValidationReport
        ``passed`` is false when any drift figure is beyond its threshold.
    """
    if not samples:
        raise ValueError("no samples: expected at least one feed dict with a batch dimension")
    if runs < 1 or not batch_sizes or not threads or min(batch_sizes) < 1 or min(threads) < 1:
        raise ValueError(f"expected runs, batch sizes and threads ≥ 1, got {runs}, {batch_sizes}, {threads}")
    step = progress or (lambda _text: None)

    compared = samples if drift_samples is None else drift_samples
    if not compared:
        raise ValueError("no drift samples: expected at least one feed dict with a batch dimension")
    step(f"comparing {task.output!r} on {len(compared)} sample batch(es)")
    drift, per_sample = _measure_drift(original, prepared, compared, task, session_options)

    batches = {size: make_batch(samples, size, batch_axes or {}) for size in batch_sizes}
    latency: dict[str, dict[int, dict[int, float]]] = {"original": {}, "prepared": {}}
    # Both models are timed per thread count back to back, so a change in machine load between
    # the two halves of a run cannot pass for a speed-up.
    for count in threads:
        for label, path in (("original", original), ("prepared", prepared)):
            session = _session(path, session_options, threads=count)
            timings = latency[label].setdefault(count, {})
            for size, feeds in batches.items():
                step(f"timing {label}: batch {size}, {count} thread{'s' if count > 1 else ''}")
                timings[size] = _median_ms(session, feeds, runs)

    checks = drift_checks(drift, thresholds)
    return ValidationReport(
        original_bytes=model_bytes(original),
        prepared_bytes=model_bytes(prepared),
        latency_ms=latency,
        drift=drift,
        per_sample=per_sample,
        failures=[c.failure for c in checks if not c.passed],
        samples=len(per_sample),
        thresholds=thresholds,
    )


def _session(path: Path, options: dict[str, Any] | None, *, threads: int | None = None) -> Any:
    import onnxruntime as ort

    session_options = ort.SessionOptions()
    # Warnings about unused initializers and the like are noise in a validation run.
    session_options.log_severity_level = 3
    for key, value in (options or {}).items():
        if not hasattr(session_options, key):
            raise ValueError(f"session option {key!r}: onnxruntime.SessionOptions has no such attribute")
        setattr(session_options, key, value)
    if threads is not None:
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])


def _measure_drift(
    original: Path, prepared: Path, samples: list[Feeds], task: Task, options: dict[str, Any] | None
) -> tuple[dict[str, float], list[float]]:
    sessions = [_session(original, options), _session(prepared, options)]
    if task.score is not None:
        scorers = [task.score(session) for session in sessions]
    else:
        for which, session in zip(("original", "prepared"), sessions, strict=True):
            names = [o.name for o in session.get_outputs()]
            if task.output not in names:
                raise ValueError(f"{which} model has no output {task.output!r}; it has {', '.join(names)}")
        scorers = [_output(session, task.output) for session in sessions]
    # Outputs are kept per sample dict, not concatenated: their shapes may differ (sequence lengths).
    pairs: Pairs = []
    for index, feeds in enumerate(samples):
        a, b = (np.asarray(score(feeds)) for score in scorers)
        if a.shape != b.shape:
            raise ValueError(f"sample {index}: {task.output!r} has shape {a.shape} originally, {b.shape} prepared")
        pairs.append((a, b, feeds))
    if task.kind == "classifier":
        return _classifier_drift(pairs, softmax=task.softmax)
    if task.kind == "embedder":
        return _embedder_drift(pairs, task.embed)
    return _raw_drift(pairs)


def _output(session: Any, name: str) -> Callable[[Feeds], np.ndarray]:
    return lambda feeds: np.asarray(session.run([name], feeds)[0])


def _rows(x: np.ndarray) -> np.ndarray:
    """``x`` as float64 ``[rows, features]``, axis 0 being the batch."""
    return np.asarray(x, dtype=np.float64).reshape(x.shape[0] if x.ndim else 1, -1)


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def _classifier_drift(pairs: Pairs, *, softmax: bool) -> tuple[dict[str, float], list[float]]:
    p = np.concatenate([_rows(a) for a, _, _ in pairs])
    q = np.concatenate([_rows(b) for _, b, _ in pairs])
    if softmax:
        p, q = _softmax(p), _softmax(q)
    diff = np.abs(p - q).max(axis=1)
    agreement = float(np.mean(p.argmax(axis=1) == q.argmax(axis=1)))
    return {"top1_agreement": agreement, "max_probability_diff": float(diff.max())}, diff.tolist()


def _embedder_drift(pairs: Pairs, embed: Embed | None) -> tuple[dict[str, float], list[float]]:
    cosines = []
    for a, b, feeds in pairs:
        u, v = (_vectors(x, feeds, embed) for x in (a, b))
        nu, nv = np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1)
        # Two zero vectors are the same embedding (1); one zero vector shares no direction (0).
        both_zero = ((nu == 0) & (nv == 0)).astype(np.float64)
        cosines.append(np.divide((u * v).sum(axis=1), nu * nv, out=both_zero, where=nu * nv > 0))
    cos = np.concatenate(cosines)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}, cos.tolist()


def _vectors(output: np.ndarray, feeds: Feeds, embed: Embed | None) -> np.ndarray:
    vectors = np.asarray(embed(output, feeds) if embed is not None else output, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != output.shape[0]:
        raise ValueError(
            f"embedder: expected [{output.shape[0]}, D] vectors, got shape {vectors.shape}"
            + ("" if embed is not None else "; pass Task(embed=...) to pool the output")
        )
    return vectors


def _raw_drift(pairs: Pairs) -> tuple[dict[str, float], list[float]]:
    errors = np.concatenate([np.abs(_rows(a) - _rows(b)).max(axis=1) for a, b, _ in pairs])
    scale = max(float(np.abs(a).max()) for a, _, _ in pairs)
    max_abs = float(errors.max())
    # An all-zero original makes any error infinitely large relative to it, and no error none.
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return {"max_abs_error": max_abs, "max_rel_error": max_rel}, errors.tolist()


def make_batch(samples: list[Feeds], size: int, axes: Mapping[str, int | None]) -> Feeds:
    """``size`` rows per input on its batch axis: rows of the samples shaped like the first, tiled when
    too few; an input without a batch axis is the first sample's, whole."""
    first = samples[0]

    def axis(name: str) -> int | None:
        return axes.get(name, 0)

    def rest(array: np.ndarray, name: str) -> tuple[int, ...]:
        a = axis(name)
        return array.shape if a is None else array.shape[:a] + array.shape[a + 1 :]

    def fits(feeds: Feeds) -> bool:
        return feeds.keys() == first.keys() and all(rest(feeds[k], k) == rest(first[k], k) for k in first)

    batched = [name for name in first if axis(name) is not None]
    parts, rows = [], 0
    for feeds in samples:
        if rows >= size:
            break
        if fits(feeds):
            parts.append(feeds)
            rows += min((feeds[k].shape[axis(k) or 0] for k in batched), default=1)
    batch = {}
    for name in first:
        a = axis(name)
        if a is None:
            batch[name] = first[name]
            continue
        data = np.concatenate([p[name] for p in parts], axis=a)
        if data.shape[a] == 0:
            raise ValueError(f"input {name!r}: the samples have no rows to build a batch from")
        repeats = -(-size // data.shape[a])
        tiled = np.concatenate([data] * repeats, axis=a) if repeats > 1 else data
        batch[name] = np.take(tiled, np.arange(size), axis=a)
    return batch


def _median_ms(session: Any, feeds: Feeds, runs: int) -> float:
    for _ in range(WARMUP_RUNS):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1000.0)
    return float(statistics.median(times))

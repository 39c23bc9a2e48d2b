"""The validation gate and its report, on tiny real models built in the test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from onnxfn.prepare.report import summary_table, write_report
from onnxfn.prepare.sizing import peak_rss_mb, recommend_memory_mb
from onnxfn.prepare.validation import (
    DEFAULT_THRESHOLDS,
    Feeds,
    Task,
    Thresholds,
    ValidationReport,
    evaluate,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = {"batch_sizes": (1, 8, 32), "threads": (1, 2), "runs": 3}


def evaluate_drift(
    original: Path, prepared: Path, samples: list[Feeds], task: Task, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> ValidationReport:
    """``evaluate`` with a single latency measurement, for tests about drift."""
    return evaluate(original, prepared, samples, task, thresholds, batch_sizes=(1,), threads=(1,), runs=1)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Feeds]]:
    """A logistic regression on digits, a copy with noisy coefficients, and samples in batches of 40."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    features, labels = load_digits(return_X_y=True)
    features = (features / 16.0).astype(np.float32)
    model = LogisticRegression(max_iter=300).fit(features, labels)
    onx = convert_sklearn(
        model,
        initial_types=[("pixels", FloatTensorType([None, 64]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    root = tmp_path_factory.mktemp("digits")
    original = root / "original.onnx"
    onnx.save(onx, original)

    # skl2onnx keeps the weights as the LinearClassifier's "coefficients" attribute, not an initializer.
    damaged = onnx.load(original)
    node = next(n for n in damaged.graph.node if n.op_type == "LinearClassifier")
    attribute = next(a for a in node.attribute if a.name == "coefficients")
    coefficients = np.array(attribute.floats, dtype=np.float32)
    noise = np.random.default_rng(0).normal(0, coefficients.std() * 1.5, coefficients.shape)
    attribute.CopyFrom(helper.make_attribute("coefficients", (coefficients + noise).astype(np.float32).tolist()))
    damaged_path = root / "damaged.onnx"
    onnx.save(damaged, damaged_path)

    samples = [{"pixels": features[i : i + 40]} for i in range(0, 400, 40)]
    return original, damaged_path, samples


def _matmul_model(path: Path, weights: np.ndarray, *, sequence: bool = False) -> Path:
    """``y = x @ weights``: x ``[B, 4]`` float and y ``[B, 8]``, or ``[B, T, 4]`` and ``[B, T, 8]``."""
    batch = ["B", "T"] if sequence else ["B"]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "embedder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*batch, 8])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@dataclass(frozen=True)
class MatMuls:
    original: Path
    close: Path  # weights with a little noise
    far: Path  # weights with a lot of noise
    weights: np.ndarray
    close_weights: np.ndarray
    samples: list[Feeds]


@pytest.fixture(scope="module")
def matmul(tmp_path_factory: pytest.TempPathFactory) -> MatMuls:
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("matmul")
    weights = rng.normal(size=(4, 8)).astype(np.float32)
    close = (weights + rng.normal(0, 0.01, weights.shape)).astype(np.float32)
    far = (weights + rng.normal(0, 0.8, weights.shape)).astype(np.float32)
    return MatMuls(
        original=_matmul_model(root / "original.onnx", weights),
        close=_matmul_model(root / "close.onnx", close),
        far=_matmul_model(root / "far.onnx", far),
        weights=weights,
        close_weights=close,
        # Three rows each, so the latency batches of 8 and 32 are tiled from them.
        samples=[{"x": rng.normal(size=(3, 4)).astype(np.float32)} for _ in range(5)],
    )


@pytest.fixture(scope="module")
def classifier_report(digits: tuple[Path, Path, list[Feeds]]) -> ValidationReport:
    original, _, samples = digits
    return evaluate(original, original, samples, Task(kind="classifier", output="probabilities"), **FAST)


def test_classifier_against_itself_passes(classifier_report: ValidationReport) -> None:
    report = classifier_report
    assert report.passed, report.failures
    assert report.drift["top1_agreement"] == 1.0
    assert report.drift["max_probability_diff"] == 0.0
    assert report.samples == 400
    assert len(report.per_sample) == 400
    assert report.original_bytes == report.prepared_bytes > 0


def test_damaged_classifier_fails_naming_figure_and_flag(
    digits: tuple[Path, Path, list[Feeds]],
) -> None:
    original, damaged, samples = digits
    report = evaluate_drift(original, damaged, samples, Task(kind="classifier", output="probabilities"))
    assert not report.passed
    assert report.drift["top1_agreement"] < 0.99
    assert any(f.startswith("top-1 agreement") and "< 0.99 (--min-top1)" in f for f in report.failures)
    assert any("(--max-prob-diff)" in f for f in report.failures)
    # The worst per-sample probability difference is the reported figure.
    assert max(report.per_sample) == pytest.approx(report.drift["max_probability_diff"])


def test_classifier_softmax_applies_to_logits(matmul: MatMuls) -> None:
    # The MatMul output read as logits: a classifier over 8 classes.
    samples = matmul.samples
    task = Task(kind="classifier", output="y", softmax=True)
    report = evaluate_drift(matmul.original, matmul.close, samples, task)
    x = np.concatenate([s["x"] for s in samples]).astype(np.float64)
    p, q = (np.exp(x @ w) / np.exp(x @ w).sum(axis=1, keepdims=True) for w in (matmul.weights, matmul.close_weights))
    assert report.drift["max_probability_diff"] == pytest.approx(np.abs(p - q).max(), rel=1e-4)


def test_latency_covers_every_thread_count_and_batch_size(classifier_report: ValidationReport) -> None:
    for model in ("original", "prepared"):
        assert set(classifier_report.latency_ms[model]) == {1, 2}
        for timings in classifier_report.latency_ms[model].values():
            assert set(timings) == {1, 8, 32}
            assert all(ms > 0 for ms in timings.values())


def test_embedder_cosines_pass_or_fail_per_thresholds(matmul: MatMuls) -> None:
    seen: list[dict[str, np.ndarray]] = []

    def embed(output: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray:
        seen.append(feeds)
        return output / np.linalg.norm(output, axis=1, keepdims=True)

    task = Task(kind="embedder", output="y", embed=embed)
    samples = matmul.samples
    messages: list[str] = []
    close = evaluate(matmul.original, matmul.close, samples, task, progress=messages.append, **FAST)
    assert close.passed, close.failures
    assert 0.985 < close.drift["cosine_min"] <= close.drift["cosine_mean"] <= 1.0 + 1e-9
    assert len(close.per_sample) == 15
    assert seen[0] is samples[0]  # pooling sees the feeds the output came from
    assert len(messages) == 1 + 2 * 2 * 3  # the comparison, then every (model, threads, batch)

    far = evaluate_drift(matmul.original, matmul.far, samples, task)
    assert not far.passed
    assert any(f.startswith("cosine min") and "(--min-cosine-min)" in f for f in far.failures)
    strict = evaluate_drift(matmul.original, matmul.close, samples, task, Thresholds(min_cosine_mean=1.0))
    assert [f.split(" (")[-1] for f in strict.failures] == ["--min-cosine-mean)"]


def test_raw_errors_match_numpy(matmul: MatMuls) -> None:
    samples = matmul.samples
    report = evaluate_drift(matmul.original, matmul.close, samples, Task(kind="raw", output="y"))
    x = np.concatenate([s["x"] for s in samples]).astype(np.float64)
    expected, got = x @ matmul.weights.astype(np.float64), x @ matmul.close_weights.astype(np.float64)
    abs_error = np.abs(expected - got).max()
    assert report.drift["max_abs_error"] == pytest.approx(abs_error, rel=1e-3)
    assert report.drift["max_rel_error"] == pytest.approx(abs_error / np.abs(expected).max(), rel=1e-3)
    assert report.passed
    tight = evaluate_drift(
        matmul.original, matmul.close, samples, Task(kind="raw", output="y"), Thresholds(max_abs_error=1e-6)
    )
    assert tight.failures == [f"max abs error {report.drift['max_abs_error']:.4g} > 1e-06 (--max-abs-error)"]


def test_samples_may_differ_in_sequence_length(matmul: MatMuls, tmp_path: Path) -> None:
    original = _matmul_model(tmp_path / "original.onnx", matmul.weights, sequence=True)
    close = _matmul_model(tmp_path / "close.onnx", matmul.close_weights, sequence=True)
    rng = np.random.default_rng(2)
    # Padded per batch, as a tokenizer does: the second dimension differs between feed dicts.
    samples = [{"x": rng.normal(size=(2, length, 4)).astype(np.float32)} for length in (3, 7, 3, 5)]

    def mean_pool(output: np.ndarray, feeds: Feeds) -> np.ndarray:
        return output.mean(axis=1)

    embedder = evaluate(original, close, samples, Task(kind="embedder", output="y", embed=mean_pool), runs=1)
    assert embedder.samples == 8 and embedder.passed
    assert all(ms > 0 for ms in embedder.latency_ms["prepared"][2].values())
    raw = evaluate_drift(original, close, samples, Task(kind="raw", output="y"))
    assert len(raw.per_sample) == 8 and raw.drift["max_abs_error"] > 0
    with pytest.raises(ValueError, match=r"expected \[2, D\] vectors, got shape \(2, 3, 8\); pass Task\(embed=...\)"):
        evaluate_drift(original, close, samples, Task(kind="embedder", output="y"))


def test_bad_task_or_output_is_rejected(matmul: MatMuls) -> None:
    with pytest.raises(ValueError, match="task kind 'regressor'"):
        Task(kind="regressor", output="y")
    with pytest.raises(ValueError, match="no output 'logits'; it has y"):
        evaluate(matmul.original, matmul.close, matmul.samples, Task(kind="raw", output="logits"))
    with pytest.raises(ValueError, match="no samples"):
        evaluate(matmul.original, matmul.close, [], Task(kind="raw", output="y"))


def test_write_report_writes_markdown_and_two_pngs(classifier_report: ValidationReport, tmp_path: Path) -> None:
    facts = {"quantization": "dynamic int8", "recommended memory": "512 MB", "warnings": ["layer is close to 250 MB"]}
    paths = write_report(classifier_report, tmp_path / "report", name="digits", facts=facts)
    assert [p.name for p in paths] == ["report.md", "latency.png", "drift.png"]
    markdown = paths[0].read_text()
    assert markdown.startswith("# digits: validation PASS")
    for expected in (
        "| original ms | prepared ms | speed-up |",
        "| top-1 agreement | 1 | ≥ 0.99 | `--min-top1` | PASS |",
        "| max probability diff | 0 | ≤ 0.05 | `--max-prob-diff` | PASS |",
        "](latency.png)",
        "](drift.png)",
        "- **quantization**: dynamic int8",
        "  - layer is close to 250 MB",
    ):
        assert expected in markdown
    # One latency row per (batch, threads).
    assert sum(line.startswith(("| 1 |", "| 8 |", "| 32 |")) for line in markdown.splitlines()) == 6
    for png in paths[1:]:
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_failed_report_lists_failures(digits: tuple[Path, Path, list[Feeds]], tmp_path: Path) -> None:
    original, damaged, samples = digits
    report = evaluate_drift(original, damaged, samples, Task(kind="classifier", output="probabilities"))
    markdown = write_report(report, tmp_path, name="digits", facts={})[0].read_text()
    assert markdown.startswith("# digits: validation FAIL")
    assert f"- {report.failures[0]}" in markdown
    assert "## Facts" not in markdown


@pytest.mark.parametrize("passed", [True, False])
def test_summary_table_renders(classifier_report: ValidationReport, passed: bool) -> None:
    report = classifier_report
    if not passed:
        report = ValidationReport(**{**vars(report), "drift": {"top1_agreement": 0.5}, "failures": ["x"]})
    console = Console(record=True, width=120)
    console.print(summary_table(report, name="digits"))
    text = console.export_text()
    assert ("PASS" if passed else "FAIL") in text
    assert "batch 32, 2 threads" in text and "size" in text and "top-1 agreement" in text


def test_peak_rss_is_plausible(matmul: MatMuls) -> None:
    peak = peak_rss_mb(matmul.original, matmul.samples[0])
    # A Python process with numpy and onnxruntime loaded: tens of MB, far below a gigabyte.
    assert 20 < peak < 1000


@pytest.mark.parametrize(
    ("peak", "memory"),
    [(0, 512), (100, 512), (241, 512), (242, 1024), (1500, 3008), (2000, 3538), (6726, 10240)],
)
def test_recommend_memory_is_smallest_size_above_one_and_a_half_peak_plus_150(peak: float, memory: int) -> None:
    assert recommend_memory_mb(peak) == memory


def test_recommend_memory_refuses_what_lambda_cannot_hold() -> None:
    with pytest.raises(ValueError, match="more than Lambda's maximum of 10240 MB"):
        recommend_memory_mb(6800)

"""Present a ``ValidationReport``: ``report.md`` with two charts for the artifact, a rich table for the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from onnxfn.prepare.validation import ValidationReport

# Lambda and S3 count memory and package limits in MiB and call them MB; so do we.
MB = 1024 * 1024
MODELS = ("original", "prepared")
PER_SAMPLE_LABELS = {
    "max_probability_diff": "max |p original − p prepared| per sample",
    "cosine_min": "cosine(original, prepared) per sample",
    "max_abs_error": "max abs error per sample",
}


def write_report(report: ValidationReport, out_dir: Path, *, name: str, facts: dict[str, Any]) -> list[Path]:
    """Write ``report.md``, ``latency.png`` and ``drift.png`` into ``out_dir``.

    Parameters
    ----------
    report
        What ``evaluate`` measured.
    out_dir
        Directory to write into; created if missing. The markdown links the charts relatively,
        so the three files stay together.
    name
        The model's name, for titles.
    facts
        Further key/values to list (quantization, Lambda fit, warnings, ...); lists and dicts
        become nested bullets.

    Returns
    -------
    list[Path]
        The markdown file and the two charts, in that order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, latency_png, drift_png = out_dir / "report.md", out_dir / "latency.png", out_dir / "drift.png"
    _plot_latency(report, latency_png, name=name)
    _plot_drift(report, drift_png, name=name)
    markdown.write_text(_markdown(report, name=name, facts=facts, charts=(latency_png.name, drift_png.name)))
    return [markdown, latency_png, drift_png]


def summary_table(report: ValidationReport, *, name: str) -> Table:
    """One table for the terminal: sizes, latency per batch and thread count, drift against thresholds."""
    verdict = "[green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
    table = Table(title=f"{name}: {verdict}", title_justify="left")
    table.add_column("")
    for column in ("original", "prepared", "prepared vs original", "limit"):
        table.add_column(column, justify="right")
    table.add_column("result", justify="center")

    table.add_row("size", _mb(report.original_bytes), _mb(report.prepared_bytes), f"{_ratio(report)} the size")
    table.add_section()
    for batch, threads, original, prepared in _latency_rows(report):
        table.add_row(
            f"batch {batch}, {threads} thread{'s' if threads > 1 else ''}",
            f"{_ms(original)} ms",
            f"{_ms(prepared)} ms",
            f"{_speed_up(original, prepared)} speed-up",
        )
    table.add_section()
    for check in report.checks:
        result = Text("PASS", style="green") if check.passed else Text("FAIL", style="bold red")
        limit = f"{check.comparison} {check.limit:g} ({check.flag})"
        table.add_row(check.label, "", check.value_text, "", limit, result)
    return table


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def _mb(size: int) -> str:
    return f"{size / MB:.2f} MB"


def _ratio(report: ValidationReport) -> str:
    return f"{report.prepared_bytes / report.original_bytes:.2f}×" if report.original_bytes else "–"


def _ms(value: float) -> str:
    # Tiny models run in microseconds; two decimals would show them all as 0.01 ms.
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _speed_up(original: float, prepared: float) -> str:
    return f"{original / prepared:.2f}×" if prepared > 0 else "–"


def _latency_rows(report: ValidationReport) -> list[tuple[int, int, float, float]]:
    """(batch, threads, original ms, prepared ms) for every pair both models were timed at."""
    original, prepared = (report.latency_ms.get(model, {}) for model in MODELS)
    return [
        (batch, threads, original[threads][batch], prepared[threads][batch])
        for threads in sorted(original.keys() & prepared.keys())
        for batch in sorted(original[threads].keys() & prepared[threads].keys())
    ]


def _markdown(report: ValidationReport, *, name: str, facts: dict[str, Any], charts: tuple[str, str]) -> str:
    latency_png, drift_png = charts
    lines = [
        f"# {name}: validation {_verdict(report.passed)}",
        "",
        f"The prepared model against the original on {report.samples} samples.",
    ]
    if report.failures:
        lines += ["", "**Failed:**", "", *(f"- {failure}" for failure in report.failures)]
    lines += [
        "",
        "## Size",
        "",
        "| model | bytes | MB |",
        "| --- | ---: | ---: |",
        f"| original | {report.original_bytes:,} | {report.original_bytes / MB:.2f} |",
        f"| prepared | {report.prepared_bytes:,} | {report.prepared_bytes / MB:.2f} |",
        f"| prepared / original | | {_ratio(report)} |",
        "",
        "## Latency",
        "",
        "Median `session.run` time per batch, intra-op threads as shown, inter-op threads 1.",
        "",
        "| batch | threads | original ms | prepared ms | speed-up |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {batch} | {threads} | {_ms(original)} | {_ms(prepared)} | {_speed_up(original, prepared)} |"
            for batch, threads, original, prepared in _latency_rows(report)
        ),
        "",
        f"![Median latency against batch size]({latency_png})",
        "",
        "## Drift",
        "",
        "| figure | value | limit | flag | result |",
        "| --- | ---: | ---: | --- | --- |",
        *(
            f"| {c.label} | {c.value_text} | {c.comparison} {c.limit:g} | `{c.flag}` | {_verdict(c.passed)} |"
            for c in report.checks
        ),
        "",
        f"![Distribution of per-sample drift]({drift_png})",
    ]
    if facts:
        lines += ["", "## Facts", "", *_fact_lines(facts)]
    return "\n".join(lines) + "\n"


def _fact_lines(facts: dict[str, Any], indent: str = "") -> list[str]:
    lines = []
    for key, value in facts.items():
        if isinstance(value, dict):
            lines += [f"{indent}- **{key}**:", *_fact_lines(value, indent + "  ")]
        elif isinstance(value, list | tuple):
            lines.append(f"{indent}- **{key}**:{'' if value else ' none'}")
            lines += [f"{indent}  - {item}" for item in value]
        else:
            lines.append(f"{indent}- **{key}**: {value}")
    return lines


def _plot_latency(report: ValidationReport, path: Path, *, name: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    # A bare Figure on the Agg canvas: no pyplot, so no global backend state and no display needed.
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    styles = ("-", "--", ":", "-.")
    batches: set[int] = set()
    values: list[float] = []
    for color, model in zip(("tab:gray", "tab:blue"), MODELS, strict=True):
        for index, (threads, timings) in enumerate(sorted(report.latency_ms.get(model, {}).items())):
            sizes = sorted(timings)
            times = [timings[s] for s in sizes]
            batches.update(sizes)
            values += times
            label = f"{model}, {threads} thread{'s' if threads > 1 else ''}"
            axes.plot(sizes, times, styles[index % len(styles)], color=color, marker="o", label=label)
    if batches:
        axes.set_xscale("log", base=2)
        # A log axis only pays off when the times span orders of magnitude; on a narrow range
        # it shows a handful of unreadable 10^x labels.
        if min(values) > 0 and max(values) / min(values) >= 10:
            axes.set_yscale("log")
            axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        else:
            axes.set_ylim(bottom=0)
        axes.set_xticks(sorted(batches), [str(b) for b in sorted(batches)])
        axes.legend()
    axes.set_xlabel("batch size")
    axes.set_ylabel("median latency per batch (ms)")
    axes.set_title(f"{name}: latency, original vs prepared")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)


def _plot_drift(report: ValidationReport, path: Path, *, name: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    check = report.per_sample_check
    if report.per_sample:
        low, high = min(report.per_sample), max(report.per_sample)
        # All samples (nearly) alike, as for a model kept in fp32: one bar, not bins narrower than a float.
        spread = None if high - low > 1e-6 * max(1.0, abs(high)) else (low - 1e-3, high + 1e-3)
        bins = 1 if spread else min(50, max(10, len(report.per_sample) // 10))
        axes.hist(report.per_sample, bins=bins, range=spread, color="tab:blue")
    else:
        axes.text(0.5, 0.5, "no samples", ha="center", va="center", transform=axes.transAxes)
    if check is not None:
        axes.axvline(check.limit, color="tab:red", linestyle="--", label=f"limit {check.limit:g} ({check.flag})")
        axes.legend()
        axes.set_xlabel(PER_SAMPLE_LABELS[check.key])
    axes.set_ylabel("samples")
    axes.set_title(f"{name}: drift {_verdict(report.passed)}")
    figure.tight_layout()
    figure.savefig(path)

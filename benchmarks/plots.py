"""The suite's PNG plots (matplotlib, Agg): cold start split, warm latency against batch, memory per batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.ticker import FormatStrFormatter

from benchmarks.fresh import PHASES
from benchmarks.records import Record, find, find_with

MODELS = ("digits", "minilm")
COLORS = {
    "interpreter": "#bbbbbb",
    "import": "#4c72b0",
    "fetch": "#dd8452",
    "session": "#55a868",
    "first inference": "#c44e52",
    "other": "#8172b3",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cold_start(records: list[Record], path: Path) -> Path | None:
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for axis, model in zip(axes, MODELS, strict=True):
        contenders = ("onnxfn", "tutorial", "tutorial (no bytecode)", "floor")
        found = (find_with(records, {"headline": True}, name=c, model=model, metric="cold start") for c in contenders)
        present = [r for r in found if r is not None]
        if not present:
            continue
        drawn = True
        bottoms = [0.0] * len(present)
        for phase in PHASES:
            heights = [max(0.0, r.extra["phases_ms"][phase]) for r in present]
            names = [r.name.replace(" (", "\n(") for r in present]
            axis.bar(names, heights, bottom=bottoms, label=phase, color=COLORS[phase])
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        for index, record in enumerate(present):
            axis.text(index, bottoms[index], f"{record.median:.0f} ms", ha="center", va="bottom", fontsize=9)
        memory = present[0].extra["memory_mb"]
        axis.set_title(f"{model} @ {memory} MB, {present[0].variant.split(', ')[1]}: spawn → first 200 (medians)")
        axis.set_ylabel("ms")
        axis.set_ylim(0, max(bottoms) * 1.15)
    if not drawn:
        plt.close(figure)
        return None
    axes[0].legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def warm_latency(records: list[Record], path: Path) -> Path | None:
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    series = {
        "onnxfn (JSON)": ("onnxfn", "JSON 1 vCPU", "o-"),
        "onnxfn (binary)": ("onnxfn-binary", "binary 1 vCPU", "s--"),
        "bare session.run": ("bare", "1 vCPU", "^-"),
        "tutorial handler": ("tutorial", "1 vCPU", "v-"),
        "PyTorch eager": ("pytorch", "1 vCPU", "D-"),
    }
    drawn = False
    for axis, model in zip(axes, MODELS, strict=True):
        warm = [r for r in records if r.model == model and r.metric == "warm latency" and r.extra.get("vcpus") == 1]
        for label, (name, suffix, style) in series.items():
            points = sorted(
                (r.extra["batch"], r.median)
                for r in warm
                if r.name == name and r.variant.endswith(suffix) and r.median is not None
            )
            if points:
                drawn = True
                axis.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axis.yaxis.set_minor_formatter(FormatStrFormatter(""))
        axis.set_xticks([1, 8, 32], ["1", "8", "32"])
        axis.set_xlabel("batch" + (" (1 × 32 tokens, then × 128 tokens)" if model == "minilm" else " (rows)"))
        axis.set_ylabel("ms, median")
        axis.set_title(f"{model}: warm latency, 1 vCPU")
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    if not drawn:
        plt.close(figure)
        return None
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def memory(records: list[Record], path: Path) -> Path | None:
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for axis, model in zip(axes, MODELS, strict=True):
        rows = [r for r in records if r.model == model and r.metric == "peak RSS" and r.name == "onnxfn"]
        if not rows:
            continue
        drawn = True
        rows.sort(key=lambda r: r.extra["batch"])
        peaks = [r.p90 or r.median or 0.0 for r in rows]
        axis.bar([r.variant for r in rows], peaks, color="#4c72b0", label="onnxfn peak RSS")
        for index, record in enumerate(rows):
            axis.text(
                index,
                peaks[index],
                f"{peaks[index]:.0f} MB\n→ {record.extra['recommended_memory_mb']} MB",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        pytorch = find(records, name="pytorch", model=model, metric="peak RSS")
        if pytorch is not None and pytorch.median:
            axis.axhline(pytorch.median, color="#c44e52", linestyle="--", label="PyTorch eager peak RSS")
        top = max([*peaks, pytorch.median if pytorch and pytorch.median else 0.0])
        axis.set_ylim(0, top * 1.3)
        axis.set_ylabel("MB (MiB)")
        axis.set_title(f"{model}: peak RSS per batch → recommended memory")
        axis.legend(fontsize=8, loc="upper left")
    if not drawn:
        plt.close(figure)
        return None
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def draw_all(records: list[Record], out: Path) -> list[Path]:
    made = [
        cold_start(records, out / "cold_start.png"),
        warm_latency(records, out / "warm_latency.png"),
        memory(records, out / "memory.png"),
    ]
    return [p for p in made if p is not None]

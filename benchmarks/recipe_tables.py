"""The tables of the ``recipes`` step (``benchmarks/recipes.py``): quantization recipes and pruning fractions."""

from __future__ import annotations

from typing import Any

from benchmarks.records import Record
from benchmarks.tables import fmt, ratio, table

DEFAULT = "blockwise 8-bit, blocks of 128 (default)"
PREVIOUS = "dynamic int8, 12 MatMuls kept fp32 (previous default)"


def _pruned(record: Record) -> bool:
    return record.extra.get("prune") is not None or record.extra.get("prune_heads") is not None


def _rows(records: list[Record], *, pruned: bool) -> list[Record]:
    return [r for r in records if r.metric == "recipe" and _pruned(r) == pruned]


def _size(x: dict[str, float]) -> str:
    return f"{fmt(x['bytes'] / 1e6, 'MB')} ({x['size_ratio']:.3f}×)"


def _cosines(figures: dict[str, float]) -> str:
    return f"{figures['min']:.4f} / {figures['mean']:.4f}"


def _gate(record: Record) -> str:
    return "pass" if record.extra["gate_passes"] else "FAIL"


def recipes(records: list[Record]) -> list[str]:
    rows = []
    for r in _rows(records, pruned=False):
        x = r.extra
        rows.append(
            [
                r.name,
                _size(x),
                fmt(x["latency_ms"]["1"], "ms"),
                fmt(x["latency_ms"]["2"], "ms"),
                ratio(r.ratios.get("previous default")),
                _cosines(x["cosine_vs_fp32"]),
                _cosines(x["cosine_vs_original"]),
                _gate(r),
            ]
        )
    header = ["recipe", "size (× fp32)", "b8×128, 1 thread", "2 threads", "1 thread ÷ previous default"]
    header += ["cosine vs fp32, min / mean", "vs the original model, min / mean", "gate"]
    return table(header, rows)


def pruning(records: list[Record]) -> list[str]:
    unpruned = next((r for r in _rows(records, pruned=False) if r.name == DEFAULT), None)
    base = unpruned.median if unpruned else None
    rows = []
    for r in [*([unpruned] if unpruned else []), *_rows(records, pruned=True)]:
        x = r.extra
        rows.append(
            [
                _what(x),
                _kept(x),
                _size(x),
                fmt(x["latency_ms"]["1"], "ms"),
                ratio(r.median / base if base and r.median else None),
                _cosines({"min": x["gate_drift"]["cosine_min"], "mean": x["gate_drift"]["cosine_mean"]}),
                _cosines(x["cosine_vs_original"]),
                _gate(r),
            ]
        )
    header = ["pruned", "kept", "size (× fp32)", "b8×128, 1 thread", "÷ unpruned"]
    header += ["cosine the gate sees, min / mean", "held out, vs the original model", "gate"]
    lines = table(header, rows)
    passing = [r for r in _rows(records, pruned=True) if r.extra["gate_passes"]]
    if passing:
        best = max(passing, key=lambda r: r.extra["bytes"] * -1)
        lines.append(
            f"The smallest pruned artifact the gate passes is {_what(best.extra)}: "
            f"{fmt(best.extra['bytes'] / 1e6, 'MB')} and {fmt(best.median, 'ms')} at 1 thread "
            f"({ratio(best.median / base if base and best.median else None)} the unpruned default's time)."
        )
    elif rows:
        lines.append("The gate refuses every pruned model measured.")
    return lines


def _what(x: dict[str, Any]) -> str:
    if x.get("prune_heads") is not None:
        return f"{x['prune_heads']:.2f} of the heads"
    if x.get("prune") is not None:
        return f"{x['prune']:g} of the FFN neurons"
    return "nothing (the default recipe alone)"


def _kept(x: dict[str, Any]) -> str:
    if x.get("heads"):
        return f"{x['heads']['kept']} of {x['heads']['of']} heads"
    if x.get("neurons"):
        return f"{x['neurons']['kept']:,} of {x['neurons']['of']:,} FFN neurons"
    return "all"

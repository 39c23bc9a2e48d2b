"""The README's benchmark figures, written from ``benchmarks/results/latest.json`` and nowhere else.

README.md holds one generated block between ``<!-- bench:cold-start:begin -->`` and
``<!-- bench:cold-start:end -->``: the run's date and how its functions ran (interpreter, CPU share
enforced or not, init burst), the targets, the cold-start phases per contender at each model's
configured memory, what each change to the cold path bought, and the memory-size table (cold start,
warm latency, cost). The suite rewrites it at the end of a full run; ``tests/test_docs_figures.py``
fails when the README's block is not what this module makes of ``latest.json``::

    python -m benchmarks.render           # rewrite README.md's block from benchmarks/results/latest.json
    python -m benchmarks.render --check   # exit 1 when README.md's block differs (nothing written)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import tables
from benchmarks.fresh import PHASES
from benchmarks.records import Record
from benchmarks.timing import ROOT

README = ROOT / "README.md"
LATEST = ROOT / "benchmarks" / "results" / "latest.json"
BEGIN = "<!-- bench:cold-start:begin -->"
END = "<!-- bench:cold-start:end -->"
NOTICE = "<!-- written by `python -m benchmarks.render` from benchmarks/results/latest.json: do not edit by hand -->"
COLD_TARGETS = ("cold-", "init", "first-")  # target keys about cold start, listed first


class MarkersMissing(ValueError):
    """The README has no generated block (or a broken one) to replace."""


def load(path: Path = LATEST) -> dict[str, Any]:
    """``latest.json`` with its records as :class:`Record` objects."""
    document: dict[str, Any] = json.loads(path.read_text())
    document["records"] = [Record.from_dict(r) for r in document["records"]]
    return document


def run_line(document: dict[str, Any]) -> str:
    """When and how the figures were measured, in one line."""
    m = document["machine"]
    runtimes = document.get("functions") or {}
    ran = []
    for name, r in runtimes.items():
        if r["cpu_share_enforced"]:
            cpu = "CPU share of the memory (memory / 1,769 vCPU) enforced as a cgroup v1 quota"
            burst = "init burst on (init unthrottled, then the quota)" if r["init_burst"] else "init burst off"
        else:
            cpu = f"CPU share of the memory NOT enforced ({r['cpu_share_problem']})"
            burst = "init burst moot without a quota"
        ran.append(
            f"{name} functions on Python {r['python']} (`{name} {r['flags']}`, the staged handlers and the built "
            f"layer, both with bytecode, nothing from the development venv), {cpu}, {burst}"
        )
    how = "; ".join(ran) if ran else "no cold-start step in this run"
    vnni = "with VNNI" if m.get("avx512_vnni") or m.get("avx_vnni") else "no VNNI"
    return (
        f"Run {document['date']} (`{document['command']}`, {document['duration_s'] / 60:.1f} min) on "
        f"{m['cpu']} ({m['cores']} cores, {vnni}, onnxruntime {m['onnxruntime']}; other work used "
        f"{m.get('others_cpu_share', 0):.0%} of the CPU meanwhile): {how}. Steps marked dev venv ran in-process on "
        f"Python {m['python']}."
    )


def targets(records: list[Record]) -> list[str]:
    """Every target of the run, the cold-start ones first."""
    judged = [r for r in records if r.target]
    cold = [r for r in judged if r.variant.startswith(COLD_TARGETS)]
    return tables.targets(cold + [r for r in judged if r not in cold])


def contenders(records: list[Record]) -> list[str]:
    """Medians per phase for every contender at each model's configured memory and the run's init burst."""
    header = ["model", "contender", "total ms", *[f"{p} ms" for p in PHASES], "init ms", "first request ms"]
    header += ["÷ tutorial", "÷ floor"]
    rows = []
    for model in tables.MODELS:
        for r in tables.cold_records(records, model):
            if not r.extra.get("headline"):
                continue
            ratios = [tables.ratio(r.ratios.get(p)) if p != r.name else "1.00×" for p in ("tutorial", "floor")]
            rows.append(
                [f"{model}, {r.extra['memory_mb']:,} MB", r.name, tables.fmt(r.median)]
                + [tables.fmt(r.extra["phases_ms"][p]) for p in PHASES]
                + [tables.fmt(r.extra["init_ms"]), tables.fmt(r.extra["first_request_ms"]), *ratios]
            )
    return tables.table(header, rows)


def changes(records: list[Record]) -> list[str]:
    """onnxfn's cold start with the cold path's changes added one at a time."""
    header = ["model", "deployed as", "total ms", "saved ms", "init ms", "first request ms"]
    header += [f"{p} ms" for p in PHASES if p != "other"]
    rows = []
    for model in tables.MODELS:
        for r in tables.change_records(records, model):
            saved = r.extra.get("saved_ms")
            rows.append(
                [f"{model}, {r.extra['memory_mb']:,} MB", r.variant, tables.fmt(r.median)]
                + [tables.fmt(saved) if saved is not None else "–"]
                + [tables.fmt(r.extra["init_ms"]), tables.fmt(r.extra["first_request_ms"])]
                + [tables.fmt(r.extra["phases_ms"][p]) for p in PHASES if p != "other"]
            )
    return tables.table(header, rows)


def _runs(records: list[Record], metric: str) -> str:
    counts = sorted({r.runs for r in records if r.metric == metric and r.runs})
    return "/".join(str(c) for c in counts) or "–"


def block(document: dict[str, Any]) -> str:
    """The generated block (markers included)."""
    records: list[Record] = document["records"]
    cold_runs, change_runs = _runs(records, "cold start"), _runs(records, tables.CHANGES_METRIC)
    sections = [
        BEGIN,
        NOTICE,
        "",
        run_line(document),
        "",
        *(["**Targets**", "", *targets(records)] if any(r.target for r in records) else []),
    ]
    phase_table = contenders(records)
    if phase_table:
        sections += [
            f"**Cold start per contender**, spawn → first 200, medians of {cold_runs} fresh processes, ms, at each "
            "model's configured memory; the phases add up to the total (init = the handler's whole import, Lambda's "
            "init; first request = the first invocation):",
            "",
            *phase_table,
        ]
    change_table = changes(records)
    if change_table:
        sections += [
            f"**What each change bought**: onnxfn's cold start, medians of {change_runs} fresh processes, ms, with "
            "today's handlers deployed as before each change and the changes added one at a time (the last row is "
            "today's default); each process checked that its changes took effect:",
            "",
            *change_table,
        ]
    memory_table = tables.memory_sizes(records, document.get("data", {}).get("cost", {}))
    if memory_table:
        sections += [
            "**Memory size**: onnxfn at each memory setting (CPU share = memory / 1,769 vCPU), batch 1 JSON; cost "
            "with Lambda's us-east-1 x86_64 prices, a cold start billed for init + invocation:",
            "",
            *memory_table,
        ]
    sections += workload_section(records)
    sections += ["Every table of the run: [`benchmarks/results/latest.md`](benchmarks/results/latest.md).", END]
    return "\n".join(sections)


def workload_section(records: list[Record]) -> list[str]:
    """minilm's batches of 8 paragraphs at each memory size, and why the demo's memory is what it is."""
    from benchmarks.memory_workload import METRIC

    rows = sorted(
        (r for r in records if r.metric == METRIC and r.median is not None), key=lambda r: r.extra["memory_mb"]
    )
    if not rows:
        return []
    lines = [
        "**minilm's workload**: `onnxfn fit minilm --batch 8` (requests of 8 paragraphs of about 100 tokens), "
        "warm, as Lambda runs the function:",
        "",
        *tables.table(
            ["memory MB", "vCPU", "warm ms", "USD / 1M requests"],
            [
                [
                    f"{r.extra['memory_mb']:,}",
                    f"{r.extra['vcpus']:.2f}",
                    tables.fmt(r.median),
                    f"${r.extra['usd_per_million']:.2f}",
                ]
                for r in rows
            ],
        ),
    ]
    cheapest = min(rows, key=lambda r: r.extra["usd_per_million"])
    configured = next(
        (
            r.extra["memory_mb"]
            for r in records
            if r.name == "onnxfn" and r.model == "minilm" and r.metric == "cold start" and r.extra.get("configured")
        ),
        None,
    )
    chosen = next((r for r in rows if r.extra["memory_mb"] == configured), None)
    if chosen is not None and chosen is cheapest:
        slowest = max(rows, key=lambda r: r.median or 0.0)
        lines += [
            f"minilm is configured at {chosen.extra['memory_mb']:,} MB (`cdk.json`), the cheapest size per request "
            f"here, answering {(slowest.median or 0.0) / (chosen.median or 1.0):.1f}× faster than "
            f"{slowest.extra['memory_mb']:,} MB.",
            "",
        ]
    elif chosen is not None and chosen.median and cheapest.median:
        cost = chosen.extra["usd_per_million"] / cheapest.extra["usd_per_million"]
        lines += [
            f"minilm is configured at {chosen.extra['memory_mb']:,} MB (`cdk.json`): {cost:.2f}× the cost per request "
            f"of the cheapest size here ({cheapest.extra['memory_mb']:,} MB), answering "
            f"{cheapest.median / chosen.median:.1f}× faster than it.",
            "",
        ]
    return lines


def replace_block(text: str, new_block: str) -> str:
    """``text`` with its generated block replaced by ``new_block``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise MarkersMissing(f"expected one {BEGIN} … {END} block")
    return text[:start] + new_block + text[end + len(END) :]


def current_block(text: str) -> str:
    """The generated block as it stands in ``text`` (markers included)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise MarkersMissing(f"expected one {BEGIN} … {END} block")
    return text[start : end + len(END)]


def render(results: Path = LATEST, readme: Path = README, check: bool = False) -> bool:
    """Write (or with ``check``, compare) README's block; True when it was already up to date."""
    text = readme.read_text()
    updated = replace_block(text, block(load(results)))
    if updated == text:
        return True
    if not check:
        readme.write_text(updated)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=LATEST, help="the run's latest.json")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 when the block differs")
    args = parser.parse_args(argv)
    same = render(args.results, args.readme, check=args.check)
    where = f"{args.readme.name}'s block from {args.results}"
    if args.check:
        print(f"{where}: {'up to date' if same else 'DIFFERS (run python -m benchmarks.render)'}")
        return 0 if same else 1
    print(f"{where}: {'already up to date' if same else 'written'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

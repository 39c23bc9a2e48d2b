"""The bodies of the generated blocks in README.md and docs/: one function per block, each making
Markdown lines from a run's ``latest.json`` (``benchmarks.render`` writes them between their markers)."""

from __future__ import annotations

from typing import Any

from benchmarks import recipe_tables, tables
from benchmarks.fresh import PHASES
from benchmarks.records import Record, find

COLD_TARGETS = ("cold-", "init", "first-")  # target keys about cold start, listed first


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


def cold_start(document: dict[str, Any]) -> list[str]:
    """docs/benchmarks.md: the run, the targets, the contenders' phases, what each change bought, memory sizes."""
    records: list[Record] = document["records"]
    cold_runs, change_runs = _runs(records, "cold start"), _runs(records, tables.CHANGES_METRIC)
    sections = [
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
    sections += ["Every table of the run: [`benchmarks/results/latest.md`](../benchmarks/results/latest.md)."]
    return sections


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


def summary(document: dict[str, Any]) -> list[str]:
    """README.md: the headline figures of the run, and how many targets it met."""
    records: list[Record] = document["records"]
    rows = []
    for model in tables.MODELS:
        cold = {r.name: r for r in tables.cold_records(records, model) if r.extra.get("headline")}
        if {"onnxfn", "tutorial", "floor"} <= set(cold):
            ours = cold["onnxfn"]
            rows.append(
                [
                    f"{model}, {ours.extra['memory_mb']:,} MB",
                    tables.fmt(ours.median, "ms"),
                    f"{tables.fmt(cold['tutorial'].median, 'ms')} ({tables.ratio(ours.ratios.get('tutorial'))})",
                    f"{tables.fmt(cold['floor'].median, 'ms')} ({tables.ratio(ours.ratios.get('floor'))})",
                    tables.fmt(ours.extra["first_request_ms"], "ms"),
                ]
            )
    lines = [f"Measured {document['date']} on {document['machine']['cpu']} ({document['machine']['cores']} cores).", ""]
    lines += [
        "**Cold start**, spawn → first response, the function as Lambda runs it (its runtime's interpreter, the "
        "built layer, the CPU share of its memory), medians:",
        "",
        *tables.table(["model", "onnxfn", "tutorial handler", "floor (bare onnxruntime)", "first request"], rows),
    ]
    warm = [find(records, metric="target", variant=key) for key in ("warm-minilm-b8", "warm-digits-b1", "pytorch-rss")]
    figures = [f"{r.target}: **{tables.fmt(r.median, r.unit)}**" for r in warm if r is not None]
    if figures:
        lines += ["**Warm**: " + "; ".join(figures) + ".", ""]
    judged = [r for r in records if r.target]
    if judged:
        missed = [r.target for r in judged if not r.passed]
        lines += [
            f"**Targets**: {sum(bool(r.passed) for r in judged)} of {len(judged)} met"
            + (f"; missed: {'; '.join(m for m in missed if m)}." if missed else ".")
            + " Every figure, and why: [docs/benchmarks.md](docs/benchmarks.md).",
        ]
    return lines


def warm_latency(document: dict[str, Any]) -> list[str]:
    """docs/api.md: the handler's warm latency against a bare run, the tutorial handler and PyTorch."""
    return tables.warm_latency(document["records"], document.get("data", {}))


def serve(document: dict[str, Any]) -> list[str]:
    """docs/local.md: what ``onnxfn serve``'s worker pool and gateway add to a request."""
    return tables.serve(document.get("data", {}).get("serve"))


def big_batch(document: dict[str, Any]) -> list[str]:
    """Records per second through the Distributed Map path at 1 and 2 batch workers, and the small path."""
    return tables.big_batch(document["records"])


def scale(document: dict[str, Any]) -> list[str]:
    """docs/configuration.md: synth time and template sizes by the number of models; serve at the most."""
    return tables.scale(document["records"])


def quantization(document: dict[str, Any]) -> list[str]:
    """docs/add.md: the demo minilm artifact against its fp32 export."""
    return tables.quantization(document["records"])


def recipes(document: dict[str, Any]) -> list[str]:
    """docs/add.md: MiniLM under every quantization recipe, measured side by side."""
    return recipe_tables.recipes(document["records"])


def recipe_summary(document: dict[str, Any]) -> list[str]:
    """README.md: fp32, the previous BERT default and today's, from the recipes step."""
    keep = {"fp32", recipe_tables.PREVIOUS, recipe_tables.DEFAULT}
    return recipe_tables.recipes([r for r in document["records"] if r.metric != "recipe" or r.name in keep])


def pruning(document: dict[str, Any]) -> list[str]:
    """docs/add.md: MiniLM pruned at several fractions, then quantized by the default recipe."""
    return recipe_tables.pruning(document["records"])


def queue(document: dict[str, Any]) -> list[str]:
    """docs/events.md: the queue worker's micro-batching against one record per invocation and a bare run."""
    return tables.queue(document["records"])


def package(document: dict[str, Any]) -> list[str]:
    """layers/README.md: the layer before and after stripping, its bytecode, and the zip function's total."""
    return tables.package(document["records"])

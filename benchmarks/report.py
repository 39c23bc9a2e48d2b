"""The run's outputs: ``latest.json`` (the records as data), ``latest.md`` (the tables the README
shows, with the date and machine) and the terminal tables (rich)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import cost, recipe_tables, tables
from benchmarks.records import Record


def write_json(path: Path, meta: dict[str, Any], records: list[Record], notes: list[str], data: dict[str, Any]) -> None:
    document = {**meta, "records": [r.to_dict() for r in records], "notes": notes, "data": data}
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False, default=float) + "\n")


def _image(pngs: list[Path], name: str, alt: str) -> list[str]:
    return [f"![{alt}]({name})", ""] if any(p.name == name for p in pngs) else []


def functions_line(data: dict[str, Any]) -> str:
    """How the functions of the cold-start figures ran: interpreter, path, CPU share, init burst."""
    runtimes = data.get("faithful", {})
    if not runtimes:
        return "No cold-start step in this run: no faithful figures."
    parts = []
    for name, r in runtimes.items():
        if r["cpu_share_enforced"]:
            cpu = "enforced as a cgroup v1 quota"
            burst = "on (init unthrottled, then the quota)" if r["init_burst"] else "off (init at the share too)"
        else:
            cpu = f"NOT enforced ({r['cpu_share_problem']}): every process ran unthrottled"
            burst = "moot without a quota"
        parts.append(
            f"{name}: Python {r['python']} (`{r['interpreter']} {r['flags']}`), sys.path = the staged function code "
            f"(`{r['code']}`) + the built layer (`{r['layer']}`), both with bytecode compiled by that interpreter; "
            f"CPU share of the memory (memory / 1,769 vCPU) {cpu}; init burst {burst}"
        )
    return (
        "Every cold-start, first-request and memory-size figure ran on the function as Lambda runs it: "
        + "; ".join(parts)
        + "."
    )


def write_markdown(
    path: Path, meta: dict[str, Any], records: list[Record], notes: list[str], data: dict[str, Any], pngs: list[Path]
) -> None:
    """``latest.md``: the run's header, then its tables section by section, then how it was measured."""
    lines = [
        *_header(meta, data),
        "## Targets",
        "",
        *tables.targets(records),
        *_cold_start_sections(records, data, pngs),
        *_memory_size_section(records, data),
        *_warm_sections(records, data, pngs),
        "## Quantization (from `onnxfn add`'s report, not re-measured)",
        "",
        *tables.quantization(records),
        "## Recipes: MiniLM quantized and pruned (dev venv, session.run)",
        "",
        *recipe_tables.recipes(records),
        *recipe_tables.pruning(records),
        "## Queue throughput (dev venv, in-process)",
        "",
        "`minilm`, an SQS event of 10 one-sentence records, 1 vCPU; the micro-batching worker (one `session.run` "
        "for the batch) against the same records one per invocation and against bare runs.",
        "",
        *tables.queue(records),
        "## Peak memory (the function as Lambda runs it)",
        "",
        "Peak RSS of a fresh function process (init, load, 3 requests of the batch) on the function's runtime, "
        "code and layer; recommended memory = next 64 MB step above peak × 1.2.",
        "",
        *tables.memory(records),
        *_image(pngs, "memory.png", "peak RSS per batch"),
        "## Package (zip function = layer + handlers, against Lambda's 250 MB unzipped)",
        "",
        *tables.package(records),
        *_serve_section(data),
        "## How it was measured",
        "",
        *[f"- {note}" for note in notes],
        *_environment(data),
        "",
    ]
    path.write_text("\n".join(lines))


def _header(meta: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """The title and when, where and how the run measured (the machine, the functions, the dev venv)."""
    m = meta["machine"]
    vnni = "with VNNI" if m.get("avx512_vnni") or m.get("avx_vnni") else "no AVX-512 VNNI or AVX-VNNI"
    return [
        "# onnxfn benchmarks",
        "",
        f"Run {meta['date']} on {m['cpu']} ({m['architecture']}, {m['cores']} cores, {vnni}), onnxruntime "
        f"{m['onnxruntime']}; `{meta['command']}` (what `make bench` runs) took {meta['duration_s'] / 60:.1f} min. "
        "Every figure was measured in this run except the quantization facts (read from `onnxfn add`'s report). "
        "Ratios compare medians measured in the same step, in alternating rounds, on a shared, noisy machine: other "
        f"work used {m.get('others_cpu_share', 0):.0%} of its CPU time during the run.",
        "",
        functions_line(data),
        f"The in-process steps (warm latency, PyTorch, queue, `onnxfn serve`'s in-process path) ran on the development "
        f"venv (Python {m['python']}), which is not what deploys: they say so.",
        "",
    ]


def _cold_start_sections(records: list[Record], data: dict[str, Any], pngs: list[Path]) -> list[str]:
    """Cold start on the function as Lambda runs it: the phases, what each change bought, init."""
    return [
        "## Cold start (the function as Lambda runs it)",
        "",
        "A fresh process of the function's runtime → its first successful response (spawn → first 200), the "
        "model from a local S3 (a moto server). onnxfn: `handlers/api.py` as the stack stages it, with the load "
        "mode `cdk.json` gives it; tutorial: download and session at import (`benchmarks/peers/tutorial_handler.py`), "
        "with the layer and its code compiled, and as tutorials ship it, without bytecode; floor: `import "
        "onnxruntime`, the artifact read from local disk, the session (its init), one run. Phases: interpreter "
        "(start and bootstrap), import (the handler's import without the model), fetch and session (the model's, "
        "wherever they ran: at init or in the first request), first inference (the first invocation without the "
        "model), other. init = the handler's whole import (Lambda's init); first request = the first invocation. "
        "Stacked bars: per-phase medians; totals: the median of the totals.",
        "",
        *tables.cold_start(records),
        *_image(pngs, "cold_start.png", "cold start split"),
        "### What each change bought (the function as Lambda runs it)",
        "",
        "onnxfn's cold start (spawn → first 200, the same phases) with the changes to its cold path added one at a "
        "time, all with today's handlers, deployed and run as before each change: as shipped before = the layer and "
        "the handlers without bytecode, `LOAD_MODE=lazy`, the credentials in a shared credentials file (so the model "
        "is read with boto3) and `_HANDLER` unset (no download at init); then + bytecode (as built and staged today), "
        "+ load at init (`LOAD_MODE=eager`, what `load_mode: auto` gives both demo models), + S3 read without boto3 "
        "(the credentials in the environment, as Lambda puts them), + download overlapping the imports (`_HANDLER` "
        "set, as Lambda sets it: today's default, the function measured above). saved = the previous row's median "
        "minus this row's.",
        "",
        *tables.changes(records),
        "### Init, ms, p50 (p90), configured memory",
        "",
        *tables.init(records, data),
    ]


def _memory_size_section(records: list[Record], data: dict[str, Any]) -> list[str]:
    """onnxfn at each memory size: cold start, warm latency and what a request costs."""
    return [
        "## Memory size: cold start, warm latency, cost (the function as Lambda runs it)",
        "",
        "onnxfn at each memory size (CPU share = memory / 1,769 vCPU as a cgroup quota), batch 1 JSON; warm = the "
        "median of the warm requests each fresh process served after its first. "
        f"{cost.PRICES_TEXT}. Billed per started ms; API Gateway, S3 and logs not included; x86_64 only.",
        "",
        *tables.memory_sizes(records, data.get("cost", {})),
    ]


def _warm_sections(records: list[Record], data: dict[str, Any], pngs: list[Path]) -> list[str]:
    """Warm latency in the development venv, and against PyTorch eager."""
    return [
        "## Warm latency (dev venv, in-process; not the deployed runtime)",
        "",
        "API Gateway event in → response out, in-process in the development venv, 1 vCPU (pinned to one core; onnxfn "
        "sizes its session to 1 thread, as at 1,769 MB). bare = `session.run` on the same tensors (minilm: "
        "pre-tokenized ids and mask, raw hidden states: tokenization, pooling and normalization are part of what the "
        "handler adds). The tutorial keeps onnxruntime's default thread pool, as written. minilm batch 1 is one "
        "32-token sentence; batches 8 and 32 are 128-token sentences (counted with the artifact's tokenizer).",
        "",
        *tables.warm_latency(records, data),
        *_image(pngs, "warm_latency.png", "warm latency against batch"),
        "## Against PyTorch eager (sentence-transformers, 1 thread; dev venv)",
        "",
        *tables.pytorch(records, data),
    ]


def _serve_section(data: dict[str, Any]) -> list[str]:
    """What ``onnxfn serve`` adds, when the run measured it."""
    if not data.get("serve"):
        return []
    return ["## `onnxfn serve` overhead (digits batch 1, JSON)", "", *tables.serve(data.get("serve"))]


def _environment(data: dict[str, Any]) -> list[str]:
    """The environment the cold-start processes ran with (the minilm function's)."""
    env = data.get("environment", {}).get("minilm", {})
    if not env:
        return []

    def shown(values: dict[str, str]) -> str:
        return ", ".join(f"`{k}={v}`" for k, v in values.items())

    return [
        f"- onnxfn function environment (minilm; digits alike): {shown(env['onnxfn'])}; sys.path = the staged "
        "handlers + the layer (set by the process itself: `-I` ignores PYTHONPATH), cwd = a private temp dir, which "
        "is also TMPDIR",
        f"- tutorial environment: {shown(env['tutorial'])}; the floor gets Lambda's variables only",
    ]


def print_records(console: Any, title: str, records: list[Record]) -> None:
    """One step's records as a terminal table."""
    from rich.table import Table

    view = Table(title=title, title_justify="left")
    for column in ("name", "model", "variant", "metric", "median", "p90", "unit", "runs", "ratios"):
        view.add_column(column, justify="right" if column in ("median", "p90", "runs") else "left")
    for r in records:
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in r.ratios.items())
        view.add_row(
            r.name, r.model, r.variant, r.metric, tables.fmt(r.median), tables.fmt(r.p90), r.unit, str(r.runs), ratios
        )
    console.print(view)


def print_targets(console: Any, records: list[Record]) -> None:
    from rich.table import Table

    view = Table(title="targets", title_justify="left")
    for column in ("target", "measured", "threshold", "result"):
        view.add_column(column)
    for r in records:
        if r.target:
            result = "[green]PASS[/green]" if r.passed else "[red]MISS[/red]"
            threshold = f"{r.threshold:g}×" if r.unit == "×" else f"{r.threshold:g} {r.unit}"
            view.add_row(r.target, tables.fmt(r.median, r.unit), threshold, result)
    if view.row_count:
        console.print(view)

"""The run's outputs: ``latest.json`` (the records as data), ``latest.md`` (the tables the README
shows, with the date and machine) and the terminal tables (rich)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import tables
from benchmarks.records import Record


def write_json(path: Path, meta: dict[str, Any], records: list[Record], notes: list[str], data: dict[str, Any]) -> None:
    document = {**meta, "records": [r.to_dict() for r in records], "notes": notes, "data": data}
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False, default=float) + "\n")


def _image(pngs: list[Path], name: str, alt: str) -> list[str]:
    return [f"![{alt}]({name})", ""] if any(p.name == name for p in pngs) else []


def write_markdown(
    path: Path, meta: dict[str, Any], records: list[Record], notes: list[str], data: dict[str, Any], pngs: list[Path]
) -> None:
    m = meta["machine"]
    vnni = "with VNNI" if m.get("avx512_vnni") or m.get("avx_vnni") else "no AVX-512 VNNI or AVX-VNNI"
    lines = [
        "# onnxfn benchmarks",
        "",
        f"Run {meta['date']} on {m['cpu']} ({m['architecture']}, {m['cores']} cores, {vnni}), Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']}; `{meta['command']}` (what `make bench` runs) took "
        f"{meta['duration_s'] / 60:.1f} min. Every figure "
        "was measured in this run except the quantization facts (read from `onnxfn add`'s report). Ratios compare "
        "medians measured in the same step, in alternating rounds, on a shared, noisy machine: other work used "
        f"{m.get('others_cpu_share', 0):.0%} of its CPU time during the run.",
        "",
        "## Targets",
        "",
        *tables.targets(records),
        "## Cold start",
        "",
        "A fresh `python -c` process → its first successful response; the model comes from a local S3 (a moto "
        "server on the other core). onnxfn: `handlers/api.py`, the model loaded on the first request; tutorial: "
        "download and session at import; floor: `import onnxruntime`, the artifact read from local disk, the "
        "session, one run. onnxfn imports boto3 and onnxruntime lazily, so its fetch and session phases hold "
        "those imports, which the tutorial pays in its import phase. Stacked bars: per-phase medians; totals: the "
        "median of the totals.",
        "",
        *tables.cold_start(records),
        *_image(pngs, "cold_start.png", "cold start split"),
        "### Init (import), ms, p50 (p90)",
        "",
        *tables.init(records, data),
        "## Warm latency",
        "",
        "API Gateway event in → response out, in-process, 1 vCPU (pinned to one core; onnxfn sizes its session to "
        "1 thread, as at 1,769 MB). bare = `session.run` on the same tensors (minilm: pre-tokenized ids and mask, "
        "raw hidden states: tokenization, pooling and normalization are part of what the handler adds). The "
        "tutorial keeps onnxruntime's default thread pool, as written. minilm batch 1 is one 32-token sentence; "
        "batches 8 and 32 are 128-token sentences (counted with the artifact's tokenizer).",
        "",
        *tables.warm_latency(records, data),
        *_image(pngs, "warm_latency.png", "warm latency against batch"),
        "## Against PyTorch eager (sentence-transformers, 1 thread)",
        "",
        *tables.pytorch(records, data),
        "## Quantization (from `onnxfn add`'s report, not re-measured)",
        "",
        *tables.quantization(records),
        "## Queue throughput",
        "",
        "`minilm`, an SQS event of 10 one-sentence records, 1 vCPU; the micro-batching worker (one `session.run` "
        "for the batch) against the same records one per invocation and against bare runs.",
        "",
        *tables.queue(records),
        "## Memory",
        "",
        "Peak RSS of a fresh function process (init, load, 3 requests of the batch); recommended memory = next "
        "64 MB step above peak × 1.2.",
        "",
        *tables.memory(records),
        *_image(pngs, "memory.png", "peak RSS per batch"),
        "## Package (zip function = layer + handlers, against Lambda's 250 MB unzipped)",
        "",
        *tables.package(records),
        "## Cost",
        "",
        *tables.costs(data.get("cost", {})),
        *(
            ["## `onnxfn serve` overhead (digits batch 1, JSON)", "", *tables.serve(data.get("serve"))]
            if data.get("serve")
            else []
        ),
        "## How it was measured",
        "",
        *[f"- {note}" for note in notes],
        *_environment(data),
        "",
    ]
    path.write_text("\n".join(lines))


def _environment(data: dict[str, Any]) -> list[str]:
    """The environment the cold-start and memory processes ran with (the minilm function's)."""
    env = data.get("environment", {}).get("minilm", {})
    if not env:
        return []

    def shown(values: dict[str, str]) -> str:
        return ", ".join(f"`{k}={v}`" for k, v in values.items())

    return [
        f"- onnxfn function environment (minilm; digits alike): {shown(env['onnxfn'])}; PYTHONPATH = the staged "
        "handlers only, cwd = a private temp dir, which is also TMPDIR",
        f"- tutorial environment: {shown(env['tutorial'])}; the floor gets the host environment and "
        "PYTHONDONTWRITEBYTECODE=1",
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

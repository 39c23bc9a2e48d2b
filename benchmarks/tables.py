"""The Markdown tables of ``latest.md``, one builder per section, from the run's records."""

from __future__ import annotations

from typing import Any

from benchmarks import cost
from benchmarks.fresh import PHASES
from benchmarks.records import Record, find

MODELS = ("digits", "minilm")
AT_LEAST = ("pytorch-speed", "queue")  # targets passed at or above their threshold


def fmt(value: float | None, unit: str = "") -> str:
    """A figure with as many decimals as its size deserves (and its unit)."""
    if value is None:
        return "–"
    size = abs(value)
    if size < 1:
        text = f"{value:.3f}"
    elif size < 10:
        text = f"{value:.2f}"
    elif size < 100:
        text = f"{value:.1f}"
    else:
        text = f"{value:,.0f}"
    if unit == "×":
        return f"{text}×"
    return f"{text} {unit}".strip()


def ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def cell(record: Record | None) -> str:
    return f"{fmt(record.median)} ({fmt(record.p90)})" if record else "–"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def warm(records: list[Record], name: str, model: str, batch: int, suffix: str) -> Record | None:
    for r in records:
        same = r.name == name and r.model == model and r.metric == "warm latency" and r.extra.get("batch") == batch
        if same and r.variant.endswith(suffix):
            return r
    return None


def targets(records: list[Record]) -> list[str]:
    rows = []
    for r in records:
        if r.target:
            sign = "≥" if r.variant in AT_LEAST else "≤"
            result = "**PASS**" if r.passed else "**MISS**"
            threshold = f"{sign} {r.threshold:g}{'×' if r.unit == '×' else ' ' + r.unit}"
            rows.append([r.target, fmt(r.median, r.unit), threshold, result])
    return table(["target", "measured", "threshold", "result"], rows)


def cold_start(records: list[Record]) -> list[str]:
    out: list[str] = []
    header = ["", "total p50 ms", "p90", *[f"{p} ms" for p in PHASES], "peak RSS MB", "÷ tutorial", "÷ floor"]
    for model in MODELS:
        rows = []
        runs = None
        for name in ("onnxfn", "tutorial", "floor"):
            r = find(records, name=name, model=model, metric="cold start")
            if r is None:
                continue
            runs = r.runs
            phases = [fmt(r.extra["phases_ms"][p]) for p in PHASES]
            ratios = [ratio(r.ratios.get(peer)) if peer != name else "1.00×" for peer in ("tutorial", "floor")]
            rows.append([name, fmt(r.median), fmt(r.p90), *phases, fmt(r.extra["peak_rss_mb"]), *ratios])
        if rows:
            out += [f"**{model}**, batch 1, {runs} fresh processes each:", "", *table(header, rows)]
    return out


def init(records: list[Record], data: dict[str, Any]) -> list[str]:
    columns = (
        ("onnxfn", "init (import)", "onnxfn: import handlers.api"),
        ("tutorial", "init (import)", "tutorial: its imports"),
        ("tutorial", "init (Lambda init phase)", "tutorial: imports + download + session"),
        ("floor", "init (import)", "floor: import onnxruntime"),
    )
    rows = []
    for model in MODELS:
        found = [find(records, name=name, model=model, metric=metric) for name, metric, _ in columns]
        if any(found):
            rows.append([model, *(cell(r) for r in found)])
    out = table(["model", *(label for _, _, label in columns)], rows)
    imports = data.get("importtime", {}).get("minilm")
    if imports:
        init_list = ", ".join(f"`{k}` {v:.0f}" for k, v in list(imports["init_imports_ms"].items())[:4])
        lazy = ", ".join(f"`{k}` {v:.0f}" for k, v in list(imports["first_request_imports_ms"].items())[:3])
        out += [
            "Where onnxfn's cold start goes (`python -X importtime` on one extra minilm cold start; cumulative ms, "
            f"inflated by the tool itself): `import handlers.api` {imports['handlers_api_ms']:.0f}, of which "
            f"{init_list}; imported lazily inside the first request "
            f"({imports['first_request_imports_total_ms']:.0f} in all): {lazy}.",
            "",
        ]
    return out


def warm_latency(records: list[Record], data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    header = ["batch", "onnxfn JSON", "onnxfn binary", "bare run", "tutorial", "PyTorch"]
    header += ["JSON ÷ bare", "JSON − bare ms", "JSON ÷ tutorial", "rounds"]
    for model in MODELS:
        rows = []
        for batch in (1, 8, 32):
            ours = warm(records, "onnxfn", model, batch, "JSON 1 vCPU")
            if ours is None:
                continue
            others = [
                warm(records, "onnxfn-binary", model, batch, "binary 1 vCPU"),
                warm(records, "bare", model, batch, " 1 vCPU"),
                warm(records, "tutorial", model, batch, " 1 vCPU"),
                warm(records, "pytorch", model, batch, " 1 vCPU"),
            ]
            ratios = [ratio(ours.ratios.get("bare")), fmt(ours.extra.get("over_bare_ms"))]
            ratios += [ratio(ours.ratios.get("tutorial")), str(ours.runs)]
            rows.append([ours.variant.split(" ")[0], cell(ours), *(cell(r) for r in others), *ratios])
        if rows:
            out += [f"**{model}**, ms, p50 (p90):", "", *table(header, rows)]
    checks = data.get("checks", {})
    if checks:
        parts = [f"{case}: " + ", ".join(f"{k} {v:.6g}" for k, v in values.items()) for case, values in checks.items()]
        out += ["Same work, checked on the answers: " + "; ".join(parts) + ".", ""]
    return out


def pytorch(records: list[Record], data: dict[str, Any]) -> list[str]:
    rows = []
    for batch in (1, 8):
        ours = warm(records, "onnxfn", "minilm", batch, "JSON 1 vCPU")
        bare = warm(records, "bare", "minilm", batch, " 1 vCPU")
        theirs = warm(records, "pytorch", "minilm", batch, " 1 vCPU")
        if ours and bare and theirs and ours.median and bare.median and theirs.median:
            label = f"latency {ours.variant.split(' ')[0]}, ms p50"
            speedups = [ratio(theirs.median / ours.median), ratio(theirs.median / bare.median)]
            rows.append([label, fmt(ours.median), fmt(bare.median), fmt(theirs.median), *speedups])
    ours_rss = find(records, name="onnxfn", model="minilm", metric="peak RSS", variant="b8×128")
    theirs_rss = find(records, name="pytorch", model="minilm", metric="peak RSS")
    if ours_rss and theirs_rss and theirs_rss.median and ours_rss.p90:
        share = ratio(ours_rss.p90 / theirs_rss.median)
        rows.append(
            ["peak RSS MB (8×128)", fmt(ours_rss.p90), "–", fmt(theirs_rss.median), f"onnxfn ÷ PyTorch {share}", ""]
        )
    if not rows:
        return []
    info = data.get("pytorch", {})
    header = ["", "onnxfn handler", "bare run", "PyTorch eager", "PyTorch ÷ onnxfn", "PyTorch ÷ bare"]
    return [
        *table(header, rows),
        f"PyTorch: torch {info.get('torch')}, sentence-transformers {info.get('sentence_transformers')}, "
        f"transformers {info.get('transformers')}, {info.get('threads')} thread, `encode(normalize_embeddings=True)` "
        f"(tokenizer, model, pooling, normalization), token shapes {info.get('token_shapes')}; timed inside its "
        "process, interleaved with the onnxfn rounds on the same core. Its import took "
        f"{fmt(info.get('import_ms'))} ms, the model load {fmt(info.get('load_ms'))} ms. RSS: onnxfn = max of the "
        "memory step's function processes at 8×128; PyTorch = its process after the 1×32 and 8×128 runs (VmHWM).",
        "",
    ]


def quantization(records: list[Record]) -> list[str]:
    facts = [r for r in records if r.extra.get("measured_in_this_run") is False]
    rows = []
    for r in facts:
        if not r.name.startswith("int8"):
            continue
        source = f"`{r.extra['source']}`" + (f", {r.extra['date']}" if "date" in r.extra else "")
        if r.metric.startswith("cosine"):
            rows.append([f"{r.metric}, {r.variant}", "1", f"{r.median:.4f}", "", source])
            continue
        same = {} if r.metric == "artifact size" else {"variant": r.variant}
        fp32 = find(facts, name="fp32", metric=r.metric, **same)
        unit = "MB" if r.metric == "artifact size" else "ms"
        label = r.metric if r.metric == "artifact size" else f"{r.metric}, {r.variant}"
        rows.append([label, fmt(fp32.median if fp32 else None, unit), fmt(r.median, unit), ratio(r.ratios.get("fp32"))])
        rows[-1].append(source)
    return table(["figure", "fp32", "int8 (onnxfn add)", "int8 ÷ fp32", "source"], rows)


def queue(records: list[Record]) -> list[str]:
    rows = []
    for r in records:
        if r.metric == "queue throughput":
            ratios = ", ".join(f"÷ {k} {v:.2f}×" for k, v in r.ratios.items())
            rows.append([r.name, r.variant.removeprefix("10 records, "), fmt(r.median), fmt(r.p90), ratios])
    return table(["contender", "S3 writes", "records/s p50", "at p90 time", "ratios (throughput)"], rows)


def memory(records: list[Record]) -> list[str]:
    rows = []
    for r in records:
        if r.metric == "peak RSS" and r.name == "onnxfn":
            said = r.extra.get("onnxfn_add_recommended_memory_mb")
            note = f"{said} (its peak {r.extra.get('onnxfn_add_peak_rss_mb')})" if said else "–"
            rows.append([r.model, r.variant, fmt(r.median), fmt(r.p90), str(r.extra["recommended_memory_mb"]), note])
    header = ["model", "batch", "peak RSS MB p50", "max", "recommended MB", "`onnxfn add` recommended MB"]
    return table(header, rows)


def package(records: list[Record]) -> list[str]:
    rows = []
    handlers = find(records, name="handlers asset")
    for arch in ("x86_64", "arm64"):
        layer = find(records, name="layer", variant=f"{arch} python3.12")
        total = find(records, name="zip function", variant=f"{arch} python3.12")
        if layer and total:
            biggest = ", ".join(f"{k} {v:.1f}" for k, v in list(layer.extra["top_entries_mb"].items())[:5])
            rows.append([arch, fmt(layer.median), fmt(layer.extra["before_strip_mb"])])
            rows[-1] += [fmt(handlers.median if handlers else None), fmt(total.median)]
            rows[-1] += [f"{total.extra['share_of_limit']:.0%}", biggest]
    header = ["arch (python3.12)", "layer MB", "before strip", "handlers MB", "total MB", "of 250 MB", "biggest, MB"]
    return table(header, rows)


def costs(data: dict[str, Any]) -> list[str]:
    if not data:
        return []
    rows = []
    for memory_mb in cost.MEMORY_SIZES_MB:
        cells = [f"{memory_mb:,}", f"{memory_mb / cost.MB_PER_VCPU:.2f}"]
        for case in cost.CASES:
            entry = data.get(case, {}).get(memory_mb)
            cells += (
                [fmt(entry["duration_ms"]), f"${entry['x86_64']:.2f}", f"${entry['arm64']:.2f}"] if entry else ["–"] * 3
            )
        rows.append(cells)
    measured = "; ".join(
        f"{case}: " + ", ".join(f"{k} {fmt(v)} ms" for k, v in data[case]["measured_ms"].items())
        for case in cost.CASES
        if case in data
    )
    slower = [
        case
        for case in cost.CASES
        if case in data and data[case]["measured_ms"]["2 vCPU"] > data[case]["measured_ms"]["1 vCPU"]
    ]
    warning = (
        [
            f"In this run the 2-thread figure was slower than the 1-thread one ({', '.join(slower)}): the second core "
            "was busy with other work on this shared machine, and onnxruntime's 2-thread pool waits for the slower "
            "thread. The 3,008 MB rows carry that; a function that size could set `ORT_INTRA_OP_THREADS=1`.",
            "",
        ]
        if slower
        else []
    )
    return [
        f"USD per million requests of the `minilm` warm handler (JSON). {cost.PRICES_TEXT}. Durations from this run "
        f"({measured}): at 1,769 MB (1 vCPU) the 1-thread figure; below it × 1,769 / memory (CPU share); at 3,008 MB "
        "(1.70 vCPUs) the 2-thread figure × 2 / 1.70. arm64 is assumed to take the durations measured here on "
        "x86_64: no arm64 host was available. Billed per started ms; init, API Gateway, S3 and logs not included.",
        "",
        *table(["memory MB", "vCPU", "1×32 ms", "x86_64", "arm64", "8×128 ms", "x86_64", "arm64"], rows),
        *warning,
    ]


def serve(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    p50, p90 = data["p50_ms"], data["p90_ms"]
    rows = [[name, fmt(p50[name]), fmt(p90[name]), fmt(p50[name] - p50["in_process"])] for name in p50]
    return [
        *table(["path", "p50 ms", "p90 ms", "p50 over in-process ms"], rows),
        f"{data['runs']} interleaved runs per path (`benchmarks/serve_overhead.py`, also in `serve.json`).",
        "",
    ]

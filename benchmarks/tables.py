"""The Markdown tables of ``latest.md``, one builder per section, from the run's records."""

from __future__ import annotations

from typing import Any

from benchmarks import cost
from benchmarks.fresh import PHASES
from benchmarks.records import Record, find, find_with

MODELS = ("digits", "minilm")
AT_LEAST = ("pytorch-speed", "queue", "recipe-cosine-min", "recipe-cosine-mean")  # passed at or above


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
            unit = "×" if r.unit == "×" else f" {r.unit}" if r.unit else ""
            threshold = f"{sign} {r.threshold:g}{unit}"
            rows.append([r.target, fmt(r.median, r.unit), threshold, result])
    return table(["target", "measured", "threshold", "result"], rows)


COLD_CONTENDERS = ("onnxfn", "tutorial", "tutorial (no bytecode)", "floor")


def cold_records(records: list[Record], model: str) -> list[Record]:
    """The model's cold starts at its configured memory: the run's init-burst setting first."""
    found = [r for r in records if r.model == model and r.metric == "cold start" and r.extra.get("configured")]
    order = {name: i for i, name in enumerate(COLD_CONTENDERS)}
    return sorted(found, key=lambda r: (not r.extra.get("headline"), order.get(r.name, 9)))


def cpu_words(record: Record) -> str:
    """The CPU a record's processes ran at, in words (NOT enforced said so)."""
    share = f"{record.extra['vcpus']:.2f} vCPU"
    if not record.extra.get("cpu_enforced"):
        return f"{share} NOT enforced"
    return f"{share} quota, " + ("init burst" if record.extra.get("init_burst") else "no init burst")


def cold_start(records: list[Record]) -> list[str]:
    out: list[str] = []
    header = ["", "CPU", "total p50 ms", "p90", *[f"{p} ms" for p in PHASES], "init ms", "first request ms"]
    header += ["peak RSS MB", "÷ tutorial", "÷ floor"]
    for model in MODELS:
        rows = []
        found = cold_records(records, model)
        for r in found:
            phases = [fmt(r.extra["phases_ms"][p]) for p in PHASES]
            ratios = [ratio(r.ratios.get(peer)) if peer != r.name else "1.00×" for peer in ("tutorial", "floor")]
            figures = [fmt(r.extra[key]) for key in ("init_ms", "first_request_ms", "peak_rss_mb")]
            rows.append([r.name, cpu_words(r), fmt(r.median), fmt(r.p90), *phases, *figures, *ratios])
        if rows:
            first = found[0].extra
            title = (
                f"**{model}** at its configured {first['memory_mb']:,} MB (timeout {first['timeout_s']} s), "
                f"batch 1, {found[0].runs} fresh processes each:"
            )
            out += [title, "", *table(header, rows)]
    return out


CHANGES_METRIC = "cold start, change by change"  # the records of cold_start_changes.py


def change_records(records: list[Record], model: str) -> list[Record]:
    """The model's cold starts with the cold path's changes added one at a time, in their order."""
    found = [r for r in records if r.model == model and r.metric == CHANGES_METRIC]
    return sorted(found, key=lambda r: r.extra.get("order", 0))


def checked_words(checked: dict[str, bool]) -> str:
    """What every process of a variant was checked to have done, in words."""
    return ", ".join(
        [
            "bytecode read" if checked.get("bytecode") else "compiled from source",
            "model loaded at init" if checked.get("model_loaded_at_init") else "model loaded in the first request",
            "boto3 imported" if checked.get("boto3_imported") else "no boto3",
            "model from the download started at init"
            if checked.get("model_from_init_download")
            else "no download at init",
        ]
    )


def changes(records: list[Record]) -> list[str]:
    """onnxfn's cold start, change by change: total, saving, init, first request and the phases."""
    out: list[str] = []
    header = ["change", "total ms p50 (p90)", "saved ms", "÷ as shipped before", "init ms", "first request ms"]
    header += [f"{p} ms" for p in PHASES] + ["checked in every process"]
    for model in MODELS:
        found = change_records(records, model)
        rows = []
        for r in found:
            saved = r.extra.get("saved_ms")
            first = ratio(r.ratios.get(found[0].variant)) if r is not found[0] else "1.00×"
            rows.append(
                [r.variant, cell(r), fmt(saved) if saved is not None else "–", first]
                + [fmt(r.extra["init_ms"]), fmt(r.extra["first_request_ms"])]
                + [fmt(r.extra["phases_ms"][p]) for p in PHASES]
                + [checked_words(r.extra.get("checked", {}))]
            )
        if rows:
            e = found[0].extra
            cpu = cpu_words(found[0])
            out += [
                f"**{model}** at its configured {e['memory_mb']:,} MB ({cpu}; timeout {e['timeout_s']} s), "
                f"{found[0].runs} fresh processes per row:",
                "",
                *table(header, rows),
            ]
    return out


def init(records: list[Record], data: dict[str, Any]) -> list[str]:
    columns = (
        ("onnxfn", "init (import)", "onnxfn: import handlers.api without the model"),
        ("onnxfn", "init (Lambda init)", "onnxfn: Lambda init (import, model if loaded there)"),
        ("tutorial", "init (import)", "tutorial: its imports"),
        ("tutorial", "init (Lambda init)", "tutorial: imports + download + session"),
        ("floor", "init (import)", "floor: import onnxruntime"),
    )
    rows = []
    for model in MODELS:
        found = [find_with(records, {"headline": True}, name=n, model=model, metric=m) for n, m, _ in columns]
        if any(found):
            rows.append([model, *(cell(r) for r in found)])
    out = table(["model", *(label for _, _, label in columns)], rows)
    imports = data.get("importtime", {}).get("minilm")
    if imports:
        init_list = ", ".join(f"`{k}` {v:.0f}" for k, v in list(imports["init_imports_ms"].items())[:4])
        lazy = ", ".join(f"`{k}` {v:.0f}" for k, v in list(imports["first_request_imports_ms"].items())[:3])
        out += [
            "Where onnxfn's cold start goes (`-X importtime` on one extra minilm cold start, same runtime; cumulative "
            f"ms, inflated by the tool itself): `import handlers.api` {imports['handlers_api_ms']:.0f}, of which "
            f"{init_list}; imported after the handler's import returned "
            f"({imports['first_request_imports_total_ms']:.0f} in all): {lazy or 'nothing'}.",
            "",
        ]
    return out


def memory_sizes(records: list[Record], data: dict[str, Any]) -> list[str]:
    """Per model and memory size: faithful cold start, warm latency, cost per 1M requests."""
    rows = []
    for model in MODELS:
        for memory_mb in cost.MEMORY_SIZES_MB:
            entry = data.get(model, {}).get(str(memory_mb), {})
            c, warm = cost.cold_record(records, model, memory_mb), cost.warm_record(records, model, memory_mb)
            if c is None and warm is None:
                continue
            label = f"{memory_mb:,}" + (" (configured)" if c and c.extra.get("configured") else "")
            rows.append(
                [
                    model,
                    label,
                    f"{memory_mb / cost.MB_PER_VCPU:.2f}",
                    cell(c),
                    fmt(c.extra["first_request_ms"]) if c else "–",
                    cell(warm),
                    f"${entry['warm']['usd']:.2f}" if "warm" in entry else "–",
                    f"${entry['cold start']['usd']:.2f}" if "cold start" in entry else "–",
                ]
            )
    header = ["model", "memory MB", "vCPU", "cold start ms p50 (p90)", "first request ms", "warm ms p50 (p90)"]
    header += ["USD / 1M warm requests", "USD / 1M cold starts"]
    return table(header, rows)


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
        if r.name != "onnxfn add (default)":
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
    return table(["figure", "fp32", "onnxfn add (default)", "÷ fp32", "source"], rows)


def queue(records: list[Record]) -> list[str]:
    rows = []
    for r in records:
        if r.metric == "queue throughput":
            ratios = ", ".join(f"÷ {k} {v:.2f}×" for k, v in r.ratios.items())
            rows.append([r.name, r.variant.removeprefix("10 records, "), fmt(r.median), fmt(r.p90), ratios])
    return table(["contender", "S3 writes", "records/s p50", "at p90 time", "ratios (throughput)"], rows)


def scale(records: list[Record]) -> list[str]:
    rows = []
    for r in records:
        if r.metric == "synth time":
            x = r.extra
            growth = next(iter(r.ratios.values()), None)
            counts = [str(x[key]) for key in ("templates", "resources_app", "resources_model_max")]
            sizes = [f"{x[key] / 1000:.0f} kB" for key in ("bytes_app", "bytes_model_max")]
            rows.append([r.model, fmt(r.median, "s"), ratio(growth), *counts, *sizes, str(x["api_resources"])])
    header = ["app", "synth p50", "÷ 1 model", "templates", "resources: app's", "a model's", "bytes: app's"]
    header += ["a model's", "API resources"]
    lines = table(header, rows)
    served = next((r for r in records if r.metric == "serve startup"), None)
    if served and lines:
        lines += [
            *([""] if lines[-1] else []),
            f"`onnxfn serve` with {served.model}: started in {fmt(served.median, 's')} (no function started); "
            f"the first request to the last model, a cold start, took {fmt(served.extra['first_request_ms'], 'ms')}.",
        ]
    return lines


def big_batch(records: list[Record]) -> list[str]:
    rows = []
    for r in records:
        if r.metric == "big batch throughput":
            x = r.extra
            ratios = ", ".join(f"{v:.2f}× {k}" for k, v in r.ratios.items()) or "–"
            same = "yes" if x.get("identical_to_small_path") else "no"
            rows.append([r.name, r.variant, fmt(x["seconds"], "s"), fmt(r.median), ratios, str(x["failed"]), same])
    header = ["path", "file", "upload to summary", "records/s", "ratio", "failed (in = scored + failed)"]
    return table([*header, "output = small path's"], rows)


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
            rows.append(
                [arch, fmt(layer.median), fmt(layer.extra.get("bytecode_mb")), fmt(layer.extra["before_strip_mb"])]
            )
            rows[-1] += [fmt(handlers.median if handlers else None), fmt(total.median)]
            rows[-1] += [f"{total.extra['share_of_limit']:.0%}", biggest]
    header = ["arch (python3.12)", "layer packages MB (no bytecode)", "layer bytecode MB", "before strip"]
    header += ["handlers MB", "total MB (bytecode included)", "of 250 MB", "biggest, MB"]
    return table(header, rows)


def serve(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    p50, p90 = data["p50_ms"], data["p90_ms"]
    rows = [[name, fmt(p50[name]), fmt(p90[name]), fmt(p50[name] - p50["in_process"])] for name in p50]
    return [
        *table(["path", "p50 ms", "p90 ms", "p50 over in-process ms"], rows),
        f"{data['runs']} interleaved runs per path (`benchmarks/serve_overhead.py`, also in `serve.json`). "
        "in_process: the handler called in the development venv's process (not the deployed runtime), a full core; "
        "pool and http: `onnxfn serve`'s workers, which run the function as Lambda runs it (its runtime, code and "
        "layer, and digits' CPU share of its memory where cgroups allow), so the difference holds that share too.",
        "",
    ]

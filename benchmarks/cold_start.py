"""Cold start, measured on the function as Lambda runs it: a fresh process to its first 200.

Every process is a :mod:`benchmarks.fresh` one: the function's runtime interpreter (``python3.12 -I
-S -B``), the staged code and the built layer on ``sys.path``, init unthrottled (the init burst
setting, default on), then the memory's CPU share as a cgroup v1 quota; the model comes from a local
S3 (a moto server in this process, its threads on the first core). Cases, in interleaved rounds
(every case once per round; one untimed round first warms the disk cache):

- at each demo model's configured memory (``cdk.json``): onnxfn's handler, the tutorial handler
  (with and without bytecode), the floor; then onnxfn and the tutorial with the other init-burst
  setting;
- onnxfn at 512 / 1,024 / 1,769 / 3,008 MB, each process also serving ``WARM_REQUESTS`` warm
  requests after the first: the memory table (cold start, warm latency, cost in ``cost.py``).

``-X importtime`` on one extra minilm cold start shows where onnxfn's init goes.
"""

from __future__ import annotations

import functools
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import faithful, fresh, lambda_env
from benchmarks.records import Record, StepResult, add_ratios, from_samples
from benchmarks.workloads import infer_path, json_event, workload

MODELS = ("digits", "minilm")
MEMORY_SIZES_MB = (512, 1024, 1769, 3008)
WARM_REQUESTS = 5
ONNXFN, TUTORIAL, TUTORIAL_PLAIN, FLOOR = "onnxfn", "tutorial", "tutorial (no bytecode)", "floor"
CONTENDERS = (ONNXFN, TUTORIAL, TUTORIAL_PLAIN, FLOOR)


@dataclass(frozen=True)
class Case:
    contender: str
    model: str
    memory_mb: int
    init_burst: bool

    @property
    def variant(self) -> str:
        return variant(self.memory_mb, self.init_burst)


def variant(memory_mb: int, init_burst: bool) -> str:
    """How a cold-start record names its setting: ``"512 MB, init burst"``."""
    return f"{memory_mb} MB, {'init burst' if init_burst else 'no init burst'}"


def cases(
    configs: dict[str, faithful.FunctionConfig], init_burst: bool, plain: bool, other_burst: bool = True
) -> list[Case]:
    """Every case of the step: the comparison, the other burst setting (when there is a quota to
    burst above), the memory sweep."""
    out = []
    for model in MODELS:
        memory = configs[model].memory_mb
        out += [Case(c, model, memory, init_burst) for c in CONTENDERS if plain or c != TUTORIAL_PLAIN]
        out += [Case(c, model, memory, not init_burst) for c in (ONNXFN, TUTORIAL) if other_burst]
        out += [Case(ONNXFN, model, m, init_burst) for m in MEMORY_SIZES_MB if m != memory]
    return out


@dataclass(frozen=True)
class Inputs:
    """What every case of one model gets: its function settings, runtime, S3 objects and request."""

    config: faithful.FunctionConfig
    runtime: faithful.Runtime
    model_env: dict[str, str]
    endpoint: str
    bucket_env: dict[str, str]  # where the tutorial finds the same objects
    onnxfn_event: dict[str, Any]
    tutorial_event: dict[str, Any]
    model_path: Path
    feeds: Path
    preoptimized: bool

    def environment(self, contender: str, memory_mb: int) -> dict[str, str]:
        c, runtime = self.config, self.runtime
        if contender == ONNXFN:
            return lambda_env.function_environment(
                c.model, self.model_env, self.endpoint, runtime.code_dir, memory_mb, c.load_mode, c.runtime
            )
        handler = "bare.run" if contender == FLOOR else "tutorial_handler.lambda_handler"
        code_dir = runtime.function_dir("peers", bytecode=contender != TUTORIAL_PLAIN)
        lambda_vars = lambda_env.lambda_variables(f"bench-{c.model}", memory_mb, c.runtime, handler, code_dir)
        base = {**lambda_env.base_environment(), **lambda_vars}
        if contender == FLOOR:
            return base
        return {**base, **lambda_env.aws_environment(self.endpoint), **self.bucket_env}


def prepare_inputs(
    s3: lambda_env.LocalS3, model: str, config: faithful.FunctionConfig, runtime: faithful.Runtime
) -> Inputs:
    model_env = s3.upload(model)
    item = workload(model, 1)
    feeds = runtime.peers_dir.parent / f"{model}-feeds.npz"
    np.savez(feeds, **item.feeds)  # type: ignore[arg-type]
    manifest = json.loads((lambda_env.ARTIFACTS / model / "manifest.json").read_text())
    return Inputs(
        config=config,
        runtime=runtime,
        model_env=model_env,
        endpoint=s3.endpoint,
        bucket_env=s3.tutorial_environment(model, model_env),
        onnxfn_event=json_event(infer_path(model), item.oip_json),
        tutorial_event=json_event("/predict", item.tutorial_json),
        model_path=lambda_env.ARTIFACTS / model / lambda_env.manifest_files(model)["model"],
        feeds=feeds,
        preoptimized=bool(manifest["onnx"]["optimization_level"]),
    )


def run_case(case: Case, inputs: Inputs, work: Path) -> dict[str, Any]:
    """One fresh process of ``case``: its phases and figures."""
    launch = fresh.Launch(
        inputs.runtime, case.memory_mb, case.init_burst, work, bytecode=case.contender != TUTORIAL_PLAIN
    )
    env = inputs.environment(case.contender, case.memory_mb)
    name = f"{case.contender.split()[0]}-{case.model}-{case.memory_mb}"
    if case.contender == ONNXFN:
        warm = WARM_REQUESTS if case.init_burst == inputs.runtime.init_burst else 0
        return fresh.onnxfn(launch, env, inputs.onnxfn_event, inputs.config.timeout_s, warm=warm, name=name)
    if case.contender in (TUTORIAL, TUTORIAL_PLAIN):
        return fresh.tutorial(launch, env, inputs.tutorial_event, name)
    return fresh.floor(launch, inputs.model_path, inputs.feeds, inputs.preoptimized, env)


def measure(quick: bool, init_burst: bool = True) -> StepResult:
    _, server_core = lambda_env.cores()
    configs = faithful.function_configs()
    runs = 1 if quick else 5
    result = StepResult()
    with lambda_env.local_s3(server_core) as s3, tempfile.TemporaryDirectory(prefix="onnxfn-cold-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        runtimes = {r: faithful.prepare(r, work, init_burst=init_burst) for r in {configs[m].runtime for m in MODELS}}
        prepared_s = time.perf_counter() - started
        enforced = all(r.cpu_enforced for r in runtimes.values())
        all_cases = cases(configs, init_burst, plain=True, other_burst=enforced)
        inputs = {m: prepare_inputs(s3, m, configs[m], runtimes[configs[m].runtime]) for m in MODELS}
        result.data["environment"] = {
            m: {c: lambda_env.reported_environment(i.environment(c, i.config.memory_mb)) for c in (ONNXFN, TUTORIAL)}
            for m, i in inputs.items()
        }
        jobs = {case: functools.partial(run_case, case, inputs[case.model], work) for case in all_cases}
        if not quick:  # the disk cache: every file a case reads, once, untimed
            for case in all_cases:
                if case.memory_mb == configs[case.model].memory_mb and case.init_burst == init_burst:
                    jobs[case]()
        samples: dict[Case, list[dict[str, Any]]] = {case: [] for case in all_cases}
        for round_index in range(runs):
            begun = time.perf_counter()
            for case, job in jobs.items():
                samples[case].append(job())
            print(f"  cold start round {round_index + 1}/{runs}: {time.perf_counter() - begun:.0f} s", flush=True)
        minilm = inputs["minilm"]
        launch = fresh.Launch(minilm.runtime, minilm.config.memory_mb, init_burst, work)
        env = minilm.environment(ONNXFN, minilm.config.memory_mb)
        importtime = fresh.importtime(launch, env, minilm.onnxfn_event, minilm.config.timeout_s)
        result.data["importtime"] = {"minilm": importtime}

    result.records += _records(samples, configs, init_burst)
    result.data["faithful"] = {name: runtime.describe() for name, runtime in runtimes.items()}
    result.data["functions"] = {m: vars(configs[m]) for m in MODELS}
    result.notes += _notes(samples, runtimes, configs, runs, quick, server_core, prepared_s)
    return result


def _record(case: Case, metric: str, values: list[float], **extra: Any) -> Record:
    return from_samples(case.contender, case.model, case.variant, metric, values, **extra)


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(s[key] for s in runs))


def _cold_record(
    case: Case, runs: list[dict[str, Any]], config: faithful.FunctionConfig, configured: bool, headline: bool
) -> Record:
    """The case's cold start (spawn → first 200) with its phases' medians and what its processes ran with."""
    record = _record(
        case,
        "cold start",
        [s["total"] for s in runs],
        phases_ms={p: _median(runs, p) for p in fresh.PHASES},
        peak_rss_mb=_median(runs, "peak_rss_mb"),
        init_ms=_median(runs, "init_ms"),
        model_in_init_ms=_median(runs, "model_in_init_ms"),
        first_request_ms=_median(runs, "first_request_ms"),
        memory_mb=case.memory_mb,
        vcpus=min(6.0, case.memory_mb / 1769),
        init_burst=case.init_burst,
        cpu_enforced=all(s["cpu_enforced"] for s in runs),
        configured=configured,
        headline=headline,
        timeout_s=config.timeout_s,
        split_from_log=all(s.get("split_from_log", True) for s in runs),
    )
    if case.contender == ONNXFN:  # what its processes did (fresh.ONNXFN's checks), the first one's
        record.extra["checks"] = runs[0].get("checks", {})
    return record


def _onnxfn_request_records(
    case: Case, runs: list[dict[str, Any]], config: faithful.FunctionConfig, headline: bool
) -> list[Record]:
    """onnxfn's first request (against its timeout) and the warm requests its processes served after it."""
    first = _record(
        case, "first request", [s["first_request_ms"] for s in runs], timeout_s=config.timeout_s, headline=headline
    )
    first.extra["share_of_timeout"] = (first.median or 0) / (config.timeout_s * 1000)
    warm = [s["warm_ms"] for s in runs if s["warm_ms"] is not None]
    if not warm:
        return [first]
    faithful_warm = from_samples(
        ONNXFN,
        case.model,
        f"b1 JSON, {case.memory_mb} MB",
        "warm latency (faithful)",
        warm,
        memory_mb=case.memory_mb,
        requests_per_process=WARM_REQUESTS,
    )
    return [first, faithful_warm]


def _add_cold_ratios(cold: dict[Case, Record]) -> None:
    """onnxfn's and the tutorial's cold starts over every other contender's in the same setting."""
    for case, record in cold.items():
        if case.contender in (ONNXFN, TUTORIAL):
            peers = {c: cold.get(Case(c, case.model, case.memory_mb, case.init_burst)) for c in CONTENDERS}
            add_ratios(record, {c: r for c, r in peers.items() if r is not None and c != case.contender})


def _pooled_import(
    samples: dict[Case, list[dict[str, Any]]], configs: dict[str, faithful.FunctionConfig], init_burst: bool
) -> Record:
    """onnxfn's handler import over both models' processes at their configured memory and the run's setting."""
    configured = [c for c in samples if c.init_burst == init_burst and c.memory_mb == configs[c.model].memory_mb]
    pooled = [s["import"] for case in configured if case.contender == ONNXFN for s in samples[case]]
    return from_samples(ONNXFN, "both", "handler import without the model, configured memory", "init (import)", pooled)


def _records(
    samples: dict[Case, list[dict[str, Any]]], configs: dict[str, faithful.FunctionConfig], init_burst: bool
) -> list[Record]:
    """Every record of the step: per case its cold start, init and (onnxfn) requests, then the pooled import."""
    records: list[Record] = []
    cold: dict[Case, Record] = {}
    for case, runs in samples.items():
        config = configs[case.model]
        configured = case.memory_mb == config.memory_mb
        # the figures the targets judge: configured memory, the run's init-burst setting
        headline = configured and case.init_burst == init_burst
        cold[case] = _cold_record(case, runs, config, configured, headline)
        records.append(cold[case])
        if configured:
            records.append(_record(case, "init (import)", [s["import"] for s in runs], headline=headline))
            records.append(_record(case, "init (Lambda init)", [s["init_ms"] for s in runs], headline=headline))
        if case.contender == ONNXFN:
            records += _onnxfn_request_records(case, runs, config, headline)
    _add_cold_ratios(cold)
    records.append(_pooled_import(samples, configs, init_burst))
    return records


def _notes(
    samples: dict[Case, list[dict[str, Any]]],
    runtimes: dict[str, faithful.Runtime],
    configs: dict[str, faithful.FunctionConfig],
    runs: int,
    quick: bool,
    server_core: int | None,
    prepared_s: float,
) -> list[str]:
    notes = []
    for runtime in runtimes.values():
        if runtime.cpu_enforced:
            cpu = "enforced (cgroup v1 quota)"
            burst = (
                f"init burst {'on' if runtime.init_burst else 'off'} (init unthrottled, then the quota) by default, "
                "the other setting measured too at the configured memory"
            )
        else:
            cpu = f"NOT enforced ({runtime.cpu_problem}): every process ran unthrottled"
            burst = "the init burst setting is moot without a quota (the other setting not measured)"
        notes.append(
            f"cold start: the function as Lambda runs it: Python {runtime.version} ({runtime.python} -I -S -B, "
            f"nothing from .venv), sys.path = staged handlers/ ({runtime.code_dir.name}, compiled) + the "
            f"{runtime.layer_dir.name} layer (compiled by layers/build.py) in Lambda's order; CPU share of the memory "
            f"{cpu}; {burst}; prepared in {prepared_s:.0f} s"
        )
    enforced = all(r.cpu_enforced for r in runtimes.values())
    failed = sorted({s["cpu_problem"] for runs_ in samples.values() for s in runs_ if not s["cpu_enforced"]})
    if enforced and failed:
        notes.append("cold start: CPU share NOT enforced in some processes: " + "; ".join(failed))
    settings = ", ".join(
        f"{m} {c.memory_mb} MB / {c.timeout_s} s / {c.runtime} / load mode {c.load_mode}" for m, c in configs.items()
    )
    notes.append(
        f"cold start: {runs} fresh process(es) per case, interleaved"
        + ("" if quick else ", after one untimed round of the configured-memory cases")
        + f"; functions from cdk.json ({settings}); moto S3 server on core {server_core}, function processes "
        f"unpinned (Lambda shows a function 2 vCPUs and limits it by quota); onnxfn processes of the default "
        f"init-burst setting also serve {WARM_REQUESTS} warm requests (batch 1, JSON) after the first"
    )
    if all(r.cpu_enforced for r in runtimes.values()):
        from onnxfn.local.runtime import CGROUP_PERIOD_US

        notes.append(
            f"cold start: the quota's CFS period is {CGROUP_PERIOD_US // 1000} ms (onnxfn.local.runtime.CpuQuota): "
            f"work shorter than one period's share (e.g. {CGROUP_PERIOD_US * 512 / 1769 / 1000:.0f} ms of CPU at "
            "512 MB) can run unthrottled after an idle moment, so the share shows on long work (init without the "
            "burst, a model loaded in the first request) more than on short warm requests; each process's move into "
            "its quota (10-15 ms, a cgroup v1 migration) is the harness's and is left out of every figure"
        )
    if not all(s.get("split_from_log", True) for runs_ in samples.values() for s in runs_):
        notes.append(
            "cold start: onnxfn's 'model loaded' log line was missing in some processes: fetch and session "
            "not split out there (counted in import or first inference)"
        )
    return notes

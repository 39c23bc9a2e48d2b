"""What each change to onnxfn's cold path bought, measured on the function as Lambda runs it.

The handlers' cold path changed four times (issue 12, one commit each). This step measures onnxfn's
cold start (spawn → first 200, split into phases as :mod:`benchmarks.fresh` splits every cold start)
with the changes added one at a time. Every variant runs today's handlers; only how they are
deployed and run differs, as it did before each change:

1. **as shipped before**: no bytecode (the layer and the staged handlers copied without
   ``__pycache__``, so Python compiles every module it imports), ``LOAD_MODE=lazy`` (the model's
   fetch and session in the first request, at the memory's CPU share), the credentials in a shared
   credentials file instead of the environment (so the model store reads the model with boto3, as
   it always did before), and ``_HANDLER`` unset (so the download does not start at init);
2. **+ bytecode**: the layer and the handlers as ``layers/build.py`` and the stack ship them,
   compiled by the runtime's interpreter;
3. **+ load at init**: ``LOAD_MODE=eager`` (what ``load_mode: auto`` gives both demo models): the
   model's fetch, session and a warm-up inference during init, with the init burst;
4. **+ S3 read without boto3**: the credentials in the environment, as Lambda puts them there: the
   standard-library SigV4 GetObject (``handlers/runtime/s3_read.py``);
5. **+ download overlapping the imports**: ``_HANDLER`` set, as Lambda sets it: the download starts
   first thing in init on a thread (``handlers/runtime/prefetch.py``). This is today's default, the
   same function the cold-start step measures.

Each fresh process reports what it did, and the step fails when a toggle did not take effect:
whether its modules were read from bytecode, whether the model was loaded when the handler's import
returned, whether ``boto3`` was in ``sys.modules`` after the first response, whether the model store
took the model's bytes from the download started at init. Medians of ``RUNS`` fresh processes per
variant (interleaved rounds), at each demo model's configured memory (``cdk.json``: digits 512 MB,
minilm 1,769 MB).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import cold_start, faithful, fresh, lambda_env
from benchmarks.records import Record, StepResult, from_samples
from benchmarks.tables import CHANGES_METRIC as METRIC

MODELS = ("digits", "minilm")
RUNS = 3


@dataclass(frozen=True)
class Variant:
    """How the function is deployed and run: each variant adds one change to the one before."""

    label: str
    change: str  # what this variant adds, in words
    bytecode: bool  # the layer and the handlers compiled (else copies without __pycache__)
    load_mode: str  # LOAD_MODE: lazy (first request) or eager (init)
    env_credentials: bool  # credentials in the environment (else only in a shared credentials file)
    handler_set: bool  # _HANDLER set, as Lambda sets it (the download may start at init)

    def expected(self) -> dict[str, bool]:
        """What a fresh process of this variant must report (see ``fresh.ONNXFN``'s checks)."""
        eager = self.load_mode == "eager"
        return {
            "bytecode": self.bytecode,
            "model_loaded_at_init": eager,
            "boto3_imported": not self.env_credentials,
            "model_from_init_download": eager and self.env_credentials and self.handler_set,
        }


VARIANTS = (
    Variant(
        "as shipped before",
        "no bytecode, load on the first request, the model read with boto3, no download at init",
        bytecode=False,
        load_mode="lazy",
        env_credentials=False,
        handler_set=False,
    ),
    Variant(
        "+ bytecode",
        "layer and handlers compiled by the runtime's interpreter",
        bytecode=True,
        load_mode="lazy",
        env_credentials=False,
        handler_set=False,
    ),
    Variant(
        "+ load at init",
        "LOAD_MODE=eager: fetch, session and a warm-up inference during init",
        bytecode=True,
        load_mode="eager",
        env_credentials=False,
        handler_set=False,
    ),
    Variant(
        "+ S3 read without boto3",
        "the model read with a standard-library SigV4 GetObject",
        bytecode=True,
        load_mode="eager",
        env_credentials=True,
        handler_set=False,
    ),
    Variant(
        "+ download overlapping the imports",
        "the download starts first thing in init, on a thread (today's default)",
        bytecode=True,
        load_mode="eager",
        env_credentials=True,
        handler_set=True,
    ),
)


def observed(checks: dict[str, Any]) -> dict[str, bool]:
    """What a process reported, in the terms of :meth:`Variant.expected`."""
    if not checks:
        raise RuntimeError("the onnxfn process reported no checks (benchmarks/fresh.py's ONNXFN)")
    from_bytecode, from_source = checks["modules_from_bytecode"], checks["modules_from_source"]
    if from_bytecode and from_source:
        raise RuntimeError(f"mixed bytecode: {from_bytecode} modules read from bytecode, {from_source} compiled")
    return {
        "bytecode": from_bytecode > 0,
        "model_loaded_at_init": bool(checks["model_loaded_at_init"]),
        "boto3_imported": bool(checks["boto3_imported"]),
        "model_from_init_download": bool(checks["model_from_init_download"]),
    }


def verify(variant: Variant, model: str, sample: dict[str, Any]) -> None:
    """Raise when a toggle of ``variant`` did not take effect in this process."""
    expected, seen = variant.expected(), observed(sample["checks"])
    problems = [f"{key}: expected {expected[key]}, got {seen[key]}" for key in expected if seen[key] != expected[key]]
    if (sample["model_in_init_ms"] > 0) != expected["model_loaded_at_init"]:
        problems.append(f"model's fetch and session during init on the timeline: {sample['model_in_init_ms']:.0f} ms")
    if problems:
        raise RuntimeError(
            f"cold-start-changes: {model} '{variant.label}': a toggle did not take effect ({'; '.join(problems)}); "
            f"the process reported {sample['checks']}"
        )


def shared_config_files(folder: Path) -> dict[str, str]:
    """The fake local credentials in a shared credentials file and the region in a config file:
    boto3 finds them there, the standard-library reader (environment only) does not."""
    credentials = folder / "credentials"
    config = folder / "config"
    keys = lambda_env.FAKE_CREDENTIALS
    credentials.write_text(
        "[default]\n"
        f"aws_access_key_id = {keys['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {keys['AWS_SECRET_ACCESS_KEY']}\n"
        f"aws_session_token = {keys['AWS_SESSION_TOKEN']}\n"
    )
    config.write_text(f"[default]\nregion = {lambda_env.REGION}\n")
    return {"AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_CONFIG_FILE": str(config)}


def environment(inputs: cold_start.Inputs, variant: Variant, files: dict[str, str]) -> dict[str, str]:
    """Today's function environment (the cold-start step's), turned back as ``variant`` says."""
    from contract.environment import LOAD_MODE

    memory_mb = inputs.config.memory_mb
    env = inputs.environment(cold_start.ONNXFN, memory_mb)
    env[LOAD_MODE] = variant.load_mode
    env["LAMBDA_TASK_ROOT"] = str(inputs.runtime.function_dir("onnxfn", variant.bytecode))
    if not variant.env_credentials:
        for key in lambda_env.FAKE_CREDENTIALS:
            env.pop(key)
        env.update(files)
    if not variant.handler_set:
        env.pop("_HANDLER")
    return env


def run_variant(variant: Variant, inputs: cold_start.Inputs, work: Path, files: dict[str, str]) -> dict[str, Any]:
    """One fresh process of ``variant``, checked."""
    config = inputs.config
    launch = fresh.Launch(inputs.runtime, config.memory_mb, inputs.runtime.init_burst, work, bytecode=variant.bytecode)
    env = environment(inputs, variant, files)
    name = f"changes-{config.model}-{VARIANTS.index(variant)}"
    sample = fresh.onnxfn(launch, env, inputs.onnxfn_event, config.timeout_s, name=name)
    verify(variant, config.model, sample)
    return sample


def measure(quick: bool, init_burst: bool = True) -> StepResult:
    _, server_core = lambda_env.cores()
    configs = faithful.function_configs()
    runs = 1 if quick else RUNS
    result = StepResult()
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {(m, v.label): [] for m in MODELS for v in VARIANTS}
    with lambda_env.local_s3(server_core) as s3, tempfile.TemporaryDirectory(prefix="onnxfn-changes-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        runtimes = {r: faithful.prepare(r, work, init_burst=init_burst) for r in {configs[m].runtime for m in MODELS}}
        inputs = {m: cold_start.prepare_inputs(s3, m, configs[m], runtimes[configs[m].runtime]) for m in MODELS}
        files = shared_config_files(work)
        prepared_s = time.perf_counter() - started
        for round_index in range(runs):
            begun = time.perf_counter()
            for model in MODELS:
                for variant in VARIANTS:
                    samples[model, variant.label].append(run_variant(variant, inputs[model], work, files))
            print(f"  changes round {round_index + 1}/{runs}: {time.perf_counter() - begun:.0f} s", flush=True)
        result.data["cold_start_changes"] = {
            "variants": [
                {**vars(v), "expected": v.expected(), "environment": _shown(environment(inputs["minilm"], v, files))}
                for v in VARIANTS
            ],
            "observed": {f"{m} / {label}": [s["checks"] for s in runs_] for (m, label), runs_ in samples.items()},
        }
    result.records += records(samples, configs, runtimes, init_burst)
    runtime = next(iter(runtimes.values()))
    result.notes.append(
        f"cold start, change by change: today's handlers deployed and run as before each change of issue 12, the "
        f"changes added one at a time ({'; '.join(f'{v.label}: {v.change}' for v in VARIANTS)}); "
        f"{runs} fresh process(es) per variant and model, interleaved, at the configured memory, on the same "
        f"faithful runtime as the cold-start step (Python {runtime.version} -I -S -B, "
        f"{runtime.cpu_label(configs['digits'].memory_mb)} for digits); before the S3 change the credentials are in a "
        "shared credentials file (AWS_SHARED_CREDENTIALS_FILE, region in AWS_CONFIG_FILE), so the store reads with "
        "boto3 as it always did before; every process checked that its toggles took effect (modules read from "
        "bytecode or compiled, the model loaded when the handler's import returned, boto3 in sys.modules after the "
        f"first response, the model's bytes taken from the download started at init); prepared in {prepared_s:.0f} s"
    )
    return result


def _shown(env: dict[str, str]) -> dict[str, str]:
    shown = lambda_env.reported_environment(env)
    return {k: v for k, v in shown.items() if k.startswith(("AWS_SHARED", "AWS_CONFIG", "AWS_ACCESS", "LOAD_MODE"))} | {
        "_HANDLER": env.get("_HANDLER", "(unset)")
    }


def records(
    samples: dict[tuple[str, str], list[dict[str, Any]]],
    configs: dict[str, faithful.FunctionConfig],
    runtimes: dict[str, faithful.Runtime],
    init_burst: bool,
) -> list[Record]:
    out: list[Record] = []
    for model in MODELS:
        config = configs[model]
        runtime = runtimes[config.runtime]
        before: list[Record] = []
        for index, variant in enumerate(VARIANTS):
            runs = samples[model, variant.label]

            def median(key: str, of: list[dict[str, Any]] = runs) -> float:
                return float(statistics.median(s[key] for s in of))

            record = from_samples(
                "onnxfn",
                model,
                variant.label,
                METRIC,
                [s["total"] for s in runs],
                order=index,
                change=variant.change,
                phases_ms={p: median(p) for p in fresh.PHASES},
                init_ms=median("init_ms"),
                model_in_init_ms=median("model_in_init_ms"),
                first_request_ms=median("first_request_ms"),
                peak_rss_mb=median("peak_rss_mb"),
                memory_mb=config.memory_mb,
                timeout_s=config.timeout_s,
                vcpus=min(6.0, config.memory_mb / 1769),
                init_burst=init_burst,
                cpu_enforced=runtime.cpu_enforced and all(s["cpu_enforced"] for s in runs),
                checked=variant.expected(),
                split_from_log=all(s.get("split_from_log", True) for s in runs),
            )
            if before and before[-1].median and record.median is not None:
                record.ratios["previous"] = record.median / before[-1].median
                record.extra["saved_ms"] = before[-1].median - record.median
            if before and before[0].median and record.median is not None:
                record.ratios[VARIANTS[0].label] = record.median / before[0].median
            before.append(record)
            out.append(record)
    return out

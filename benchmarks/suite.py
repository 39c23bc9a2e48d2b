"""The benchmark suite: onnxfn against its peers, measured in one run (``make bench``).

Runs each step in its own process (so one step's imports, memory and module state never touch the
next), then derives the cost table and judges the targets, and writes ``latest.json``,
``latest.md`` and the plots into ``benchmarks/results/``::

    python -m benchmarks.suite                 # everything (~10 min here; the PyTorch venv once more)
    python -m benchmarks.suite --quick         # a fast smoke run, written to benchmarks/results/raw/quick/
    python -m benchmarks.suite --only warm     # one step (repeatable), written to benchmarks/results/raw/
    python -m benchmarks.suite --no-init-burst # init at the memory's CPU share too (default: unthrottled)

Steps: package, quantization, recipes, pytorch-venv, cold-start, cold-start-changes, warm, memory, queue, serve, scale,
big-batch
(warm-2vcpu on request: ``--only warm-2vcpu``). Every cold-start figure comes from the function as
Lambda runs it (``faithful.py``); the in-process steps (warm, queue, PyTorch) run on the development
venv and say so. A benchmark is not a test: nothing here asserts a target; a missed target is
reported as MISS. A full run ends by rewriting README.md's benchmark block (``render.py``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.records import Record, StepResult, machine, machine_cpu_seconds, others_share
from benchmarks.timing import ROOT

if TYPE_CHECKING:
    from rich.console import Console

RESULTS = ROOT / "benchmarks" / "results"
STEPS = (
    "package",
    "quantization",
    "recipes",
    "pytorch-venv",
    "cold-start",
    "cold-start-changes",
    "warm",
    "warm-2vcpu",
    "memory",
    "memory-workload",
    "queue",
    "serve",
    "scale",
    "big-batch",
)
# warm-2vcpu fed the old cost table (dev venv, extrapolated); the faithful memory-size table replaced it.
DEFAULT_STEPS = tuple(s for s in STEPS if s != "warm-2vcpu")


def _serve(quick: bool, out: Path) -> StepResult:
    from benchmarks import serve_overhead

    if quick:
        record = serve_overhead.main(rounds=2, per_round=20, cold_starts=1, results=out / "serve.json")
    else:
        record = serve_overhead.main(results=out / "serve.json")
    result = StepResult(data={"serve": record})
    for path in ("in_process", "pool", "http"):
        result.records.append(
            Record(
                name=f"onnxfn serve ({path})",
                model="digits",
                variant="b1 JSON",
                metric="local request latency",
                median=record["p50_ms"][path],
                p90=record["p90_ms"][path],
                unit="ms",
                runs=record["runs"],
            )
        )
    base = result.records[0]
    for r in result.records[1:]:
        r.ratios["in-process handler"] = (r.median or 0) / (base.median or 1)
    result.notes.append("serve: benchmarks/serve_overhead.py (client and `onnxfn serve` on this machine, both cores)")
    return result


def _pytorch_venv(quick: bool) -> StepResult:
    from benchmarks.pytorch_venv import VENV, ensure_venv

    seconds = ensure_venv()
    state = f"created in {seconds:.0f} s" if seconds else "already there (stamp matches)"
    note = f"PyTorch peer venv {VENV.relative_to(ROOT)}: {state}"
    return StepResult(notes=[note], data={"pytorch_venv_setup_s": seconds})


def run_step(name: str, quick: bool, out: Path, init_burst: bool = True) -> StepResult:
    """Run one step in this process."""
    if name == "package":
        from benchmarks import package

        return package.measure(quick)
    if name == "quantization":
        from benchmarks import quantization_facts

        return quantization_facts.measure(quick)
    if name == "recipes":
        from benchmarks import recipes

        return recipes.measure(quick)
    if name == "pytorch-venv":
        return _pytorch_venv(quick)
    if name == "cold-start":
        from benchmarks import cold_start

        return cold_start.measure(quick, init_burst=init_burst)
    if name == "cold-start-changes":
        from benchmarks import cold_start_changes

        return cold_start_changes.measure(quick, init_burst=init_burst)
    if name in ("warm", "warm-2vcpu"):
        from benchmarks import warm_overhead

        return warm_overhead.measure(quick, vcpus=2 if name == "warm-2vcpu" else 1)
    if name == "memory":
        from benchmarks import memory

        return memory.measure(quick, init_burst=init_burst)
    if name == "memory-workload":
        from benchmarks import memory_workload

        return memory_workload.measure(quick)
    if name == "queue":
        from benchmarks import queue_throughput

        return queue_throughput.measure(quick)
    if name == "serve":
        return _serve(quick, out)
    if name == "scale":
        from benchmarks import scale

        return scale.measure(quick)
    if name == "big-batch":
        from benchmarks import big_batch

        return big_batch.measure(quick)
    raise ValueError(f"unknown step {name!r}; steps: {', '.join(STEPS)}")


def _spawn(name: str, quick: bool, out: Path, init_burst: bool) -> StepResult | None:
    """Run one step in a fresh process; None when it failed (its error is on stderr)."""
    with tempfile.TemporaryDirectory(prefix="onnxfn-suite-") as tmp:
        result_file = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "benchmarks.suite", "--step", name, "--result", str(result_file)]
        command += ["--out", str(out), *(["--quick"] if quick else []), *([] if init_burst else ["--no-init-burst"])]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        completed = subprocess.run(command, cwd=ROOT, env=env, check=False)
        if completed.returncode != 0 or not result_file.exists():
            return None
        return StepResult.from_json(result_file.read_text())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few runs of everything: a smoke run")
    parser.add_argument("--only", action="append", choices=STEPS, metavar="NAME", help=f"run only: {', '.join(STEPS)}")
    parser.add_argument("--skip", action="append", choices=STEPS, default=[], metavar="NAME", help="leave a step out")
    parser.add_argument(
        "--no-init-burst",
        dest="init_burst",
        action="store_false",
        help="run the functions' init at the memory's CPU share too (default: unthrottled, Lambda's init burst)",
    )
    parser.add_argument("--out", type=Path, help="where to write (default: benchmarks/results, or raw/ when partial)")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # internal: run one step here
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser


def _plan(args: argparse.Namespace) -> tuple[list[str], bool, Path]:
    """The steps to run, whether the run is partial (not the README's figures) and where it writes."""
    steps = [s for s in STEPS if (s in args.only if args.only else s in DEFAULT_STEPS) and s not in args.skip]
    partial = args.quick or bool(args.only) or bool(args.skip)
    label = "quick" if args.quick else "only-" + "-".join(steps) if args.only else "partial"
    out: Path = args.out or (RESULTS / "raw" / label if partial else RESULTS)
    return steps, partial, out


def _run_steps(
    console: Console, steps: list[str], args: argparse.Namespace, out: Path
) -> tuple[StepResult, dict[str, float], list[str]]:
    """Every step in its own process, printed as it ends: their results merged, seconds per step, the failed."""
    from benchmarks import report

    run = StepResult()
    seconds: dict[str, float] = {}
    failed: list[str] = []
    for step in steps:
        console.rule(f"[bold]{step}")
        begun = time.perf_counter()
        result = _spawn(step, args.quick, out, args.init_burst)
        seconds[step] = time.perf_counter() - begun
        if result is None:
            failed.append(step)
            run.notes.append(f"step {step} FAILED (see the run's output); its figures are missing")
            continue
        for record in result.records:
            record.step = step
        run.records += result.records
        run.notes += result.notes
        run.data.update(result.data)
        report.print_records(console, f"{step} ({seconds[step]:.0f} s)", result.records)
    return run, seconds, failed


def _derive(records: list[Record]) -> tuple[list[Record], dict[str, Any]]:
    """The cost records derived from the measured ones and the targets judged on both; the cost table."""
    from benchmarks import cost, targets

    cost_records, cost_table = cost.derive(records)
    target_records = targets.evaluate(records + cost_records)
    for step, derived in (("cost", cost_records), ("targets", target_records)):
        for record in derived:
            record.step = step
    return cost_records + target_records, cost_table


def _meta(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    steps: list[str],
    failed: list[str],
    seconds: dict[str, float],
    data: dict[str, Any],
) -> dict[str, Any]:
    """The run's date, machine, command and steps (its duration and the others' CPU share come last)."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "command": " ".join(["python -m benchmarks.suite", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "init_burst": args.init_burst,
        # how the cold-start figures ran: interpreter, code, layer, CPU share enforced or not, init burst
        "functions": data.get("faithful", {}),
        "steps": steps,
        "failed_steps": failed,
        "step_seconds": seconds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step here (``--step``) or the suite's steps each in its own process and write the run's results."""
    args = _parser().parse_args(argv)
    if args.step:
        args.result.write_text(run_step(args.step, args.quick, args.out or RESULTS, args.init_burst).to_json())
        return 0

    from rich.console import Console

    from benchmarks import plots, report

    started = time.perf_counter()
    cpu_start = machine_cpu_seconds()
    console = Console(width=None if sys.stdout.isatty() else 150)
    steps, partial, out = _plan(args)
    out.mkdir(parents=True, exist_ok=True)
    run, seconds, failed = _run_steps(console, steps, args, out)
    derived, cost_table = _derive(run.records)
    records, notes, data = run.records + derived, run.notes, run.data
    data["cost"] = cost_table
    meta = _meta(args, argv, steps, failed, seconds, data)
    pngs = plots.draw_all(records, out)
    meta["duration_s"] = time.perf_counter() - started
    meta["machine"]["others_cpu_share"] = others_share(cpu_start, machine_cpu_seconds())
    report.write_json(out / "latest.json", meta, records, notes, data)
    report.write_markdown(out / "latest.md", meta, records, notes, data, pngs)
    report.print_targets(console, records)
    if out.resolve() == RESULTS.resolve() and not partial:  # a full run: the README's figures come from it
        from benchmarks import render

        rewritten = render.render(out / "latest.json")
        console.print(f"figures in README.md and docs/ rewritten from {out / 'latest.json'}: {len(rewritten)} file(s)")
    console.print(f"{len(records)} records in {out / 'latest.json'}, tables in {out / 'latest.md'}; ", end="")
    console.print(f"{meta['duration_s'] / 60:.1f} min" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

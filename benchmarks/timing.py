"""Timing helpers shared by the benchmark scripts: medians in-process, last stdout line of a fresh process."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (repository on the path); return its last stdout line."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return out.stdout.strip().splitlines()[-1]


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def interleaved(
    contenders: dict[str, Callable[[], object]],
    rounds: int,
    per_round: int = 1,
    warmup: int = 2,
    timers: dict[str, Callable[[], float]] | None = None,
) -> dict[str, list[float]]:
    """Milliseconds per call of each contender, measured in alternating rounds.

    Each round calls every contender ``per_round`` times, in turn, so the machine's noise (other
    tenants, frequency changes) falls on all of them alike. ``timers`` holds contenders that time
    themselves (a call returning its own milliseconds, e.g. work done in another process).
    """
    timers = timers or {}
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    for timer in timers.values():
        for _ in range(warmup):
            timer()
    samples: dict[str, list[float]] = {name: [] for name in (*contenders, *timers)}
    for _ in range(rounds):
        for name, fn in contenders.items():
            for _ in range(per_round):
                started = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - started) * 1000)
        for name, timer in timers.items():
            for _ in range(per_round):
                samples[name].append(timer())
    return samples


def rounds_for(call_ms: float, contenders: int, budget_s: float, low: int, high: int) -> int:
    """How many interleaved rounds fit ``budget_s`` for calls of about ``call_ms`` each, within [low, high]."""
    fitting = int(budget_s * 1000 / max(call_ms * contenders, 1e-3))
    return max(low, min(high, fitting))

"""What every measurement of the suite returns: records (one figure each) and the machine they ran on.

A record is one figure for one contender (``name``: onnxfn, bare, tutorial, pytorch, floor) on one
``model`` in one ``variant`` (batch, encoding, ...). ``ratios`` holds this record's median divided
by each peer's median measured in the same step of the same run; a target record carries
``target``, ``threshold`` and ``passed`` besides.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.timing import percentile


@dataclass
class Record:
    name: str
    model: str
    variant: str
    metric: str
    median: float | None
    p90: float | None
    unit: str
    runs: int | None
    ratios: dict[str, float] = field(default_factory=dict)
    step: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    target: str | None = None
    threshold: float | None = None
    passed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.target is None:
            for key in ("target", "threshold", "passed"):
                data.pop(key)
        if not self.extra:
            data.pop("extra")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(**data)


def from_samples(
    name: str, model: str, variant: str, metric: str, samples: list[float], unit: str = "ms", **extra: Any
) -> Record:
    """A record of the median and p90 of ``samples``."""
    return Record(
        name=name,
        model=model,
        variant=variant,
        metric=metric,
        median=statistics.median(samples),
        p90=percentile(samples, 0.9),
        unit=unit,
        runs=len(samples),
        extra=dict(extra),
    )


def add_ratios(record: Record, peers: dict[str, Record]) -> Record:
    """Fill ``record.ratios`` with its median over each peer's median (same step, same run)."""
    for peer, other in peers.items():
        if other is not record and record.median is not None and other.median:
            record.ratios[peer] = record.median / other.median
    return record


@dataclass
class StepResult:
    """What one step of the suite returns to the runner."""

    records: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"records": [r.to_dict() for r in self.records], "notes": self.notes, "data": self.data}, default=float
        )

    @classmethod
    def from_json(cls, text: str) -> StepResult:
        raw = json.loads(text)
        return cls([Record.from_dict(r) for r in raw["records"]], raw["notes"], raw["data"])


def find(records: list[Record], **match: Any) -> Record | None:
    """The first record whose fields equal ``match``."""
    for record in records:
        if all(getattr(record, key) == value for key, value in match.items()):
            return record
    return None


def find_with(records: list[Record], extra: dict[str, Any], **match: Any) -> Record | None:
    """The first record whose fields equal ``match`` and whose ``extra`` holds ``extra``."""
    for record in records:
        same = all(getattr(record, key) == value for key, value in match.items())
        if same and all(record.extra.get(key) == value for key, value in extra.items()):
            return record
    return None


def machine_cpu_seconds() -> tuple[float, float, float]:
    """(busy, all, ours): CPU seconds of the whole machine since boot (/proc/stat) and of this process tree."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait; steal counts as busy (another tenant had the CPU)
    ours = sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )
    return (sum(fields) - idle) / ticks, sum(fields) / ticks, ours


def others_share(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """The share of the machine's CPU time that other work used between ``start`` and ``end``."""
    busy, total, ours = (b - a for a, b in zip(start, end, strict=True))
    return max(0.0, (busy - ours) / total) if total else 0.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, cores, Python and onnxruntime versions of this machine."""
    import onnxruntime

    flags = ""
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(line for line in lines if line.startswith("flags")).split(":", 1)[1]
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "architecture": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "avx512_vnni": "avx512_vnni" in flags.split(),
        "avx_vnni": "avx_vnni" in flags.split(),
        "kernel": platform.release(),
    }

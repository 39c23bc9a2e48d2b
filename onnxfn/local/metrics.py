"""Metrics of the local app in the Prometheus text format.

Two sources: the CloudWatch Embedded Metric Format documents the handlers print (Powertools
Metrics; the same lines CloudWatch turns into metrics when deployed), and the local gateway's and
workers' own counts (requests, invocations, cold starts). ``GET /_local/metrics`` renders both,
so a local Prometheus or Grafana can watch the app.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_UNIT_SUFFIX = {
    "Milliseconds": "milliseconds",
    "Seconds": "seconds",
    "Microseconds": "microseconds",
    "Bytes": "bytes",
    "Kilobytes": "kilobytes",
    "Megabytes": "megabytes",
    "Percent": "percent",
}

Labels = tuple[tuple[str, str], ...]
_BACKLOG_LIMIT = 10_000  # EMF lines kept unparsed between scrapes


@functools.lru_cache(maxsize=1024)
def snake(name: str) -> str:
    text = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    return re.sub(r"[^a-zA-Z0-9_]", "_", text).lower()


@dataclass
class _Series:
    kind: str  # counter | summary
    help: str
    values: dict[Labels, list[float]]  # labels → [count, sum]


class MetricsRegistry(Collector):
    """Thread-safe store of counters and summaries, exposed through prometheus_client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self._gauges: dict[str, tuple[str, dict[Labels, float]]] = {}
        self.emf_documents = 0
        self._backlog: list[tuple[str, str]] = []
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def _observe(self, name: str, kind: str, help_text: str, labels: Mapping[str, str], value: float) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._series.setdefault(name, _Series(kind, help_text, {}))
            count_sum = series.values.setdefault(key, [0.0, 0.0])
            count_sum[0] += 1
            count_sum[1] += value

    def inc(self, name: str, labels: Mapping[str, str], value: float = 1.0, help_text: str = "") -> None:
        self._observe(name, "counter", help_text, labels, value)

    def observe(self, name: str, labels: Mapping[str, str], value: float, help_text: str = "") -> None:
        self._observe(name, "summary", help_text, labels, value)

    def set_gauge(self, name: str, labels: Mapping[str, str], value: float, help_text: str = "") -> None:
        with self._lock:
            _, values = self._gauges.setdefault(name, (help_text, {}))
            values[tuple(sorted(labels.items()))] = value

    def collect_emf(self, function: str, line: str) -> bool:
        """Take one log line if it is an EMF document (True); parsed later, at the next scrape.

        Parsing happens when ``/_local/metrics`` is read (or when the backlog grows large), not
        on the log reader's thread while requests are in flight.
        """
        text = line.strip()
        if '"_aws"' not in text or not (text.startswith("{") and text.endswith("}")):
            return False
        with self._lock:
            self._backlog.append((function, text))
            full = len(self._backlog) >= _BACKLOG_LIMIT
        if full:
            self._drain()
        return True

    def _drain(self) -> None:
        with self._lock:
            backlog, self._backlog = self._backlog, []
        for function, text in backlog:
            self._record_emf(function, text)

    def _record_emf(self, function: str, line: str) -> None:
        try:
            document = orjson.loads(line)
        except ValueError:
            return
        aws = document.get("_aws") if isinstance(document, dict) else None
        if not isinstance(aws, dict):
            return
        for directive in aws.get("CloudWatchMetrics", []):
            namespace = snake(str(directive.get("Namespace", "emf")))
            dimension_names = {name for group in directive.get("Dimensions", []) for name in group}
            labels = {snake(name): str(document.get(name, "")) for name in dimension_names}
            labels["function"] = function
            for metric in directive.get("Metrics", []):
                name = str(metric.get("Name", ""))
                unit = str(metric.get("Unit", "None"))
                raw = document.get(name)
                values = raw if isinstance(raw, list) else [raw]
                for value in values:
                    if not isinstance(value, int | float):
                        continue
                    base = f"{namespace}_{snake(name)}"
                    help_text = f"{name} ({unit}) from the handlers' embedded metric format"
                    if unit == "Count":
                        self.inc(f"{base}_total", labels, float(value), help_text)
                    else:
                        suffix = _UNIT_SUFFIX.get(unit)
                        self.observe(f"{base}_{suffix}" if suffix else base, labels, float(value), help_text)
        with self._lock:
            self.emf_documents += 1

    def collect(self) -> Iterator[Any]:
        with self._lock:
            series = {name: _Series(s.kind, s.help, dict(s.values)) for name, s in self._series.items()}
            gauges = {name: (help_text, dict(values)) for name, (help_text, values) in self._gauges.items()}
        for name, data in sorted(series.items()):
            label_names = sorted({key for labels in data.values for key, _ in labels})
            family: Any
            if data.kind == "counter":
                family = CounterMetricFamily(name.removesuffix("_total"), data.help or name, labels=label_names)
                for labels, (_, total) in data.values.items():
                    family.add_metric([dict(labels).get(k, "") for k in label_names], total)
            else:
                family = SummaryMetricFamily(name, data.help or name, labels=label_names)
                for labels, (count, total) in data.values.items():
                    family.add_metric([dict(labels).get(k, "") for k in label_names], count, total)
            yield family
        for name, (help_text, values) in sorted(gauges.items()):
            label_names = sorted({key for labels in values for key, _ in labels})
            gauge = GaugeMetricFamily(name, help_text or name, labels=label_names)
            for labels, value in values.items():
                gauge.add_metric([dict(labels).get(k, "") for k in label_names], value)
            yield gauge

    def render(self) -> bytes:
        self._drain()
        return generate_latest(self._registry)

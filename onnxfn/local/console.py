"""What ``onnxfn serve`` prints: the app's tables at start, then one line per request or batch."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from onnxfn.local.executions import ExecutionReport
from onnxfn.local.functions import FunctionRuntime, Invocation
from onnxfn.local.gateway import RequestLog
from onnxfn.local.pollers import BatchOutcome
from onnxfn.local.serve import LocalApp

_ROUTINE = ('"level":"INFO"', '"level":"DEBUG"', '"level": "INFO"', '"level": "DEBUG"')
_QUIET = ("No application metrics to publish", "self.flush_metrics(raise_on_empty_metrics")


_ANSI = {"dim": "2", "green": "32", "yellow": "33", "red": "31"}


def _status_style(status: int) -> str:
    return "green" if status < 400 else "yellow" if status < 500 else "red"


class ServeConsole:
    """Request logs, batch deliveries, cold starts and (some) function logs, one line each.

    Request lines are written straight to the console's file with ANSI colours (when it is a
    terminal) rather than rendered by rich: a line per request must cost microseconds, not the
    fraction of a millisecond rich's markup rendering takes, or the log would be the overhead.
    """

    def __init__(self, console: Console, *, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self._color = console.is_terminal and not console.no_color
        self._lock = threading.Lock()

    def _paint(self, text: str, style: str) -> str:
        return f"\x1b[{_ANSI[style]}m{text}\x1b[0m" if self._color else text

    def _line(self, text: str) -> None:
        with self._lock:
            self.console.file.write(text + "\n")
            self.console.file.flush()

    def _stamp(self) -> str:
        return self._paint(time.strftime("%H:%M:%S"), "dim")

    def request(self, log: RequestLog) -> None:
        invocation = log.invocation
        parts = [self._stamp(), log.method, log.path, self._paint(str(log.status), _status_style(log.status))]
        parts.append(f"{log.total_ms:.1f} ms")
        if log.function:
            parts.append(self._paint(log.function, "dim"))
        if invocation is not None and invocation.init_ms is not None:
            parts.append(self._paint(f"cold start: init {invocation.init_ms:.0f} ms", "dim"))
        self._line(" ".join(parts))
        if invocation is not None and invocation.error:
            error = invocation.error
            self._line(f"  {self._paint(str(error.get('errorType')), 'red')}: {error.get('errorMessage')}")

    def batch(self, outcome: BatchOutcome) -> None:
        invocation = outcome.invocation
        if outcome.note:
            self.console.print(
                f"[dim]{self._stamp()}[/] SQS → {invocation.function}: {outcome.received} message(s), "
                f"[dim]{outcome.note}[/]",
                highlight=False,
            )
            return
        style = "green" if not outcome.failed_ids else "yellow" if invocation.ok else "red"
        cold = f"  [dim]cold start: init {invocation.init_ms:.0f} ms[/]" if invocation.init_ms is not None else ""
        self.console.print(
            f"[dim]{self._stamp()}[/] SQS → {invocation.function}: {outcome.received} message(s), "
            f"[{style}]{outcome.deleted} done, {len(outcome.failed_ids)} to retry[/] "
            f"{invocation.duration_ms:.0f} ms{cold}",
            highlight=False,
        )
        if invocation.error:
            self.console.print(f"  [red]{invocation.error.get('errorType')}[/]: {invocation.error.get('errorMessage')}")

    def execution(self, report: ExecutionReport) -> None:
        """A state machine's execution ended: its outcome and what its Maps read and ran."""
        maps = report.maps
        read = sum(m["items"] for m in maps)
        batches = sum(m["batches"] for m in maps)
        failed = sum(m["failed"] for m in maps)
        style = "green" if report.status == "SUCCEEDED" else "red"
        self.console.print(
            f"[dim]{self._stamp()}[/] Step Functions {report.state_machine}: {report.name} "
            f"[{style}]{report.status}[/], {read:,} records read, {batches} batches ({failed} failed)",
            highlight=False,
        )
        if report.error:
            self.console.print(f"  [red]{report.error}[/]: {str(report.cause)[:300]}", highlight=False)

    def invocation(self, runtime: FunctionRuntime, invocation: Invocation) -> None:
        if invocation.max_rss_mb > runtime.memory_mb:
            self.console.print(
                f"[yellow]warning[/] {runtime.name}: peak RSS {invocation.max_rss_mb:.0f} MB is over its "
                f"{runtime.memory_mb} MB memory setting; Lambda would end this invocation"
            )

    def log(self, function: str, line: str) -> None:
        if any(text in line for text in _QUIET):
            return
        if not self.verbose and line.startswith("{") and any(level in line for level in _ROUTINE):
            return  # structured INFO/DEBUG lines: shown with --verbose
        self.console.print(Text.assemble((f"{function} | ", "dim"), line), highlight=False)


def print_app(console: Console, app: LocalApp) -> None:
    """Routes, functions, queues and example commands of a started app."""
    state = app.state()
    assembly = app.assembly
    assert assembly is not None
    url = state["url"]
    names = {rt_id: pool.runtime.name for rt_id, pool in app.pools.items()}
    if assembly.api is not None:
        routes = Table(title=f"API {url}  (stage /{assembly.api.stage} optional)", title_justify="left")
        for column in ("method", "resource", "function", "auth"):
            routes.add_column(column)
        for route in assembly.api.routes:
            auth = "api key" if route.api_key_required else route.authorization.lower().replace("none", "open")
            routes.add_row(route.method, route.resource_path, names[route.function_id], auth)
        console.print(routes)
    functions = Table(title="functions (one worker process per concurrent invocation)", title_justify="left")
    for column in ("function", "kind", "model", "memory", "timeout", "handler"):
        functions.add_column(column)
    for pool in app.pools.values():
        rt = pool.runtime
        functions.add_row(rt.name, rt.kind, rt.model, f"{rt.memory_mb} MB", f"{rt.timeout_s:.0f} s", rt.handler)
    console.print(functions)
    for description in sorted({pool.runtime.launch.describe() for pool in app.pools.values()}):
        style = "green" if "NOT" not in description else "bold yellow"
        console.print(f"[{style}]runtime:[/] {description}", highlight=False, soft_wrap=True)
    for line in sorted({note for pool in app.pools.values() for note in pool.runtime.launch.notes}):
        console.print(f"[yellow]note:[/] {line}", highlight=False, soft_wrap=True)
    queues = Table(title=f"event sources (embedded AWS at {state['aws_endpoint']})", title_justify="left")
    for column in ("source", "function", "batch", "redrive"):
        queues.add_column(column)
    for note in assembly.notifications:
        bucket = state["buckets"][note.bucket_id]
        queues.add_row(f"s3://{bucket}/{note.prefix}* → {assembly.queue(note.queue_id).name}", "", "", "")
    for source in assembly.event_sources:
        queue = assembly.queue(source.queue_id)
        redrive = f"DLQ after {queue.max_receive_count} receives" if queue.dead_letter_id else "-"
        queues.add_row(queue.name, names[source.function_id], str(source.batch_size), redrive)
    console.print(queues)
    key = state["api_key"]
    header = f" -H 'x-api-key: {key}'" if key else ""
    console.print("[bold]try[/]")
    for model in sorted(state["models"]):
        console.print(f"  curl -s{header} {url}/v2/models/{model}", highlight=False, markup=False, soft_wrap=True)
    if key:
        console.print(f"  API key: {key}", highlight=False)
    console.print(f"  Swagger UI: {url}/swagger   metrics: {url}/_local/metrics", highlight=False)
    console.print(
        f"  onnxfn invoke file MODEL data.jsonl   |   onnxfn invoke queue MODEL --data '{{...}}'   "
        f"(AWS CLI: --endpoint-url {state['aws_endpoint']})",
        highlight=False,
        markup=False,
    )


def describe(value: Any) -> str:
    return json.dumps(value, indent=2)[:4000]

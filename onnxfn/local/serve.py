"""The whole app on this machine: embedded AWS, function pools, gateway, pollers, state file.

:class:`LocalApp` is what ``onnxfn serve``, ``onnxfn demo`` and ``onnxfn invoke`` (when nothing
runs) start. Everything it runs comes from the cloud assembly; it stops everything it started.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxfn.local.assembly import CloudAssembly, load_assembly
from onnxfn.local.cloud import EmbeddedAws, Provisioned, function_runtimes, provision
from onnxfn.local.executions import ExecutionReport, ExecutionRunner
from onnxfn.local.functions import FunctionPool, FunctionRuntime, Invocation
from onnxfn.local.gateway import DEFAULT_INTEGRATION_TIMEOUT_S, Gateway, RequestLog
from onnxfn.local.metrics import MetricsRegistry
from onnxfn.local.pollers import BatchOutcome, QueuePoller
from onnxfn.local.runtime import RuntimeOptions

DEFAULT_STATE_FILE = Path(".onnxfn/serve.json")
_STATE_ENV = (
    ("DATA_BUCKET", "bucket"),
    ("INBOX_PREFIX", "inbox_prefix"),
    ("OUTBOX_PREFIX", "outbox_prefix"),
    ("RESULTS_PREFIX", "results_prefix"),
    ("REQUESTS_PREFIX", "requests_prefix"),
)


@dataclass
class ServeOptions:
    app_dir: Path = Path("cdk.out")
    host: str = "127.0.0.1"
    port: int = 8080
    concurrency: int = 2
    api_key: str | None = None
    state_file: Path | None = DEFAULT_STATE_FILE
    retry_after_s: float | None = None
    integration_timeout_s: float = DEFAULT_INTEGRATION_TIMEOUT_S
    moto_port: int = 0
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


@dataclass
class Observers:
    """Callbacks for what the console shows; each may be None."""

    request: Callable[[RequestLog], None] | None = None
    invocation: Callable[[FunctionRuntime, Invocation], None] | None = None
    batch: Callable[[BatchOutcome], None] | None = None
    execution: Callable[[ExecutionReport], None] | None = None
    log: Callable[[str, str], None] | None = None


@dataclass
class LocalApp:
    options: ServeOptions = field(default_factory=ServeOptions)
    observers: Observers = field(default_factory=Observers)
    assembly: CloudAssembly | None = None
    aws: EmbeddedAws | None = None
    provisioned: Provisioned | None = None
    gateway: Gateway | None = None
    pools: dict[str, FunctionPool] = field(default_factory=dict)
    pollers: list[QueuePoller] = field(default_factory=list)
    metrics: MetricsRegistry = field(default_factory=MetricsRegistry)
    api_key: str | None = None
    executions: ExecutionRunner | None = None
    started_s: float = 0.0
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> LocalApp:
        started = time.perf_counter()
        options = self.options
        self.assembly = assembly = load_assembly(options.app_dir)
        try:
            self.aws = EmbeddedAws(host="127.0.0.1", port=options.moto_port).start()
            self.provisioned = provision(self.aws, assembly)
            for runtime in function_runtimes(assembly, self.provisioned, self.aws.endpoint, options.runtime):
                self.pools[runtime.logical_id] = FunctionPool(
                    runtime, options.concurrency, self._on_log, self._on_invocation
                )
            if assembly.api is not None and assembly.api.has_api_key:
                self.api_key = options.api_key or secrets.token_urlsafe(24)
            self.gateway = Gateway(
                assembly.api,
                self.pools,
                self.metrics,
                api_key=self.api_key,
                host=options.host,
                port=options.port,
                integration_timeout_s=options.integration_timeout_s,
                on_request=self._on_request,
            )
            thread = threading.Thread(target=self.gateway.serve_forever, name="gateway", daemon=True)
            thread.start()
            self._threads.append(thread)
            sqs = self.aws.client("sqs")
            notified = {notification.queue_id for notification in assembly.notifications}
            for source in assembly.event_sources:
                if not source.enabled:
                    continue
                poller = QueuePoller(
                    source,
                    self.provisioned.queue_urls[source.queue_id],
                    self.provisioned.queue_arns[source.queue_id],
                    self.pools[source.function_id],
                    sqs,
                    retry_after_s=options.retry_after_s,
                    on_batch=self.observers.batch,
                    s3_notified=source.queue_id in notified,
                )
                poller.start()
                self.pollers.append(poller)
            self.executions = ExecutionRunner(
                self.provisioned.state_machines, self.pools, self.aws, self._progress_dir(), self.observers.execution
            )
            self.executions.start()
            self.started_s = time.perf_counter() - started
            if options.state_file is not None:
                write_state(options.state_file, self.state())
        except BaseException:
            self.stop()
            raise
        return self

    def _progress_dir(self) -> Path:
        """Where each execution's progress is written: beside the state file, or a folder of this run's."""
        if self.options.state_file is not None:
            return self.options.state_file.parent / "executions"
        return Path(tempfile.mkdtemp(prefix="onnxfn-executions-"))

    # --- callbacks -------------------------------------------------------------------------------

    def _on_log(self, function: str, line: str) -> None:
        if self.metrics.collect_emf(function, line):
            return
        if self.observers.log is not None:
            self.observers.log(function, line)

    def _on_invocation(self, runtime: FunctionRuntime, invocation: Invocation) -> None:
        labels = {"function": runtime.name, "kind": runtime.kind, "model": runtime.model}
        self.metrics.inc(
            "onnxfn_local_invocations_total",
            {**labels, "status": invocation.status},
            help_text="Invocations by outcome",
        )
        self.metrics.observe(
            "onnxfn_local_invocation_duration_milliseconds", labels, invocation.duration_ms, "Handler duration"
        )
        if invocation.init_ms is not None:
            self.metrics.inc("onnxfn_local_cold_starts_total", labels, help_text="Workers started (cold starts)")
            self.metrics.observe(
                "onnxfn_local_init_duration_milliseconds", labels, invocation.init_ms, "Handler import (init)"
            )
        self.metrics.set_gauge("onnxfn_local_workers", labels, self.pools[runtime.logical_id].workers, "Live workers")
        if self.observers.invocation is not None:
            self.observers.invocation(runtime, invocation)

    def _on_request(self, log: RequestLog) -> None:
        labels = {"method": log.method, "status": str(log.status), "function": log.function}
        self.metrics.inc("onnxfn_local_requests_total", labels, help_text="HTTP requests through the local API")
        self.metrics.observe(
            "onnxfn_local_request_duration_milliseconds", {"function": log.function}, log.total_ms, "Gateway latency"
        )
        if self.observers.request is not None:
            self.observers.request(log)

    # --- state -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What scripts and tests need to drive the running app."""
        assert self.assembly is not None and self.provisioned is not None and self.aws is not None
        assembly, provisioned = self.assembly, self.provisioned
        models: dict[str, dict[str, Any]] = {}
        functions = {}
        for pool in self.pools.values():
            runtime = pool.runtime
            functions[runtime.logical_id] = {
                "name": runtime.name,
                "kind": runtime.kind,
                "model": runtime.model,
                "handler": runtime.handler,
                "memory_mb": runtime.memory_mb,
                "timeout_s": runtime.timeout_s,
                "runtime": runtime.launch.describe(),
                "python": runtime.launch.interpreter,
                "faithful": runtime.launch.faithful,
                "cpu_vcpus": round(runtime.launch.cpu.vcpus, 3),
                "cpu_enforced": runtime.launch.cpu.enforced,
                "runtime_notes": list(runtime.launch.notes),
            }
            entry = models.setdefault(runtime.model, {"functions": {}})
            entry["functions"][runtime.kind] = runtime.name
            env = runtime.environment
            for key, name in (
                ("DATA_BUCKET", "bucket"),
                ("INBOX_PREFIX", "inbox_prefix"),
                ("OUTBOX_PREFIX", "outbox_prefix"),
                ("RESULTS_PREFIX", "results_prefix"),
                ("REQUESTS_PREFIX", "requests_prefix"),
                ("MODEL_PREFIX", "model_prefix"),
                ("MANIFEST_VERSION_ID", "manifest_version_id"),
            ):
                if key in env:
                    entry[name] = env[key]
        for source in assembly.event_sources:
            runtime = self.pools[source.function_id].runtime
            queue = assembly.queue(source.queue_id)
            entry = models.setdefault(runtime.model, {"functions": {}})
            key = "inbox_queue_url" if runtime.kind == "batch" else "requests_queue_url"
            entry[key] = provisioned.queue_urls[source.queue_id]
            if queue.dead_letter_id:
                dlq_key = "inbox_dead_letter_url" if runtime.kind == "batch" else "requests_dead_letter_url"
                entry[dlq_key] = provisioned.queue_urls[queue.dead_letter_id]
        for spec in assembly.state_machines:
            machine = provisioned.state_machines[spec.logical_id]
            for function_id in spec.functions.values():
                entry = models.setdefault(self.pools[function_id].runtime.model, {"functions": {}})
                entry["state_machine_arn"] = machine.arn
                if machine.failure_queue_urls:
                    entry["failed_executions_url"] = machine.failure_queue_urls[0]
        assert self.gateway is not None
        return {
            "pid": os.getpid(),
            "url": self.gateway.url,
            "stage": assembly.api.stage if assembly.api else None,
            "api_key": self.api_key,
            "aws_endpoint": self.aws.endpoint,
            "region": "us-east-1",
            "stack": assembly.stack_name,
            "assembly": str(assembly.directory.resolve()),
            "buckets": provisioned.buckets,
            "queues": provisioned.queue_urls,
            "functions": functions,
            "models": models,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "startup_s": round(self.started_s, 3),
            "executions_dir": str(self.executions.progress_dir) if self.executions else None,
        }

    def worker_pids(self) -> list[int]:
        return [pid for pool in self.pools.values() for pid in pool.pids()]

    def stop(self) -> None:
        """Stop everything this app started; safe to call twice or after a failed start."""
        for poller in self.pollers:
            poller.request_stop()
        for poller in self.pollers:
            poller.stop()
        self.pollers.clear()
        if self.executions is not None:
            self.executions.stop()
            self.executions = None
        if self.gateway is not None:
            self.gateway.shutdown()
            self.gateway = None
        for pool in self.pools.values():
            pool.close()
        if self.aws is not None:
            self.aws.stop()
            self.aws = None
        if self.options.state_file is not None:
            try:
                state = json.loads(self.options.state_file.read_text())
                if state.get("pid") == os.getpid():
                    self.options.state_file.unlink()
            except (OSError, ValueError):
                pass


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write the state file atomically (readers never see half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        json.dump(state, handle, indent=2)
        temp = Path(handle.name)
    os.chmod(temp, 0o600)  # it holds the local API key
    temp.replace(path)


def read_state(path: Path) -> dict[str, Any] | None:
    """The state of a running ``onnxfn serve``, or None when none runs there."""
    try:
        state: dict[str, Any] = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state

"""State machines, run locally: moto holds them and their executions, onnxfn runs them.

Each state machine of the assembly is created in moto with its definition resolved (its
substitutions' functions become the local functions' ARNs), so a function's ``StartExecution``
behaves as in AWS: a new name starts an execution, a repeated one is refused. moto cannot run
Lambda tasks without Docker, so a runner polls moto for new executions and runs each definition
with :class:`onnxfn.local.states.Execution`, invoking the local function workers, then records the
outcome in moto (``DescribeExecution`` answers as AWS would) and, for a failed execution, sends
the event EventBridge would send to the state machine's failure queues. Each execution's progress
(items read, batches done and failed per Map) is written to ``<progress_dir>/<name>.json``, which
``onnxfn invoke file`` shows.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onnxfn.local.assembly import LOCAL_ACCOUNT, LOCAL_REGION, CloudAssembly, Resolver, local_name
from onnxfn.local.functions import FunctionPool
from onnxfn.local.states import Execution, MapProgress, StatesError, TaskFailed

POLL_S = 0.25
PROGRESS_S = 0.25  # how often an execution's progress file is rewritten while it runs
logger = logging.getLogger("onnxfn.local")


@dataclass
class LocalStateMachine:
    logical_id: str
    name: str
    arn: str
    definition: dict[str, Any]
    failure_queue_urls: tuple[str, ...] = ()


@dataclass
class ExecutionReport:
    """What ``<progress_dir>/<name>.json`` holds: written on every change, atomically."""

    name: str
    state_machine: str
    status: str = "RUNNING"
    maps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    cause: str | None = None
    output: Any = None


def create_state_machines(
    stepfunctions: Any, assembly: CloudAssembly, resolver: Resolver, queue_urls: dict[str, str]
) -> dict[str, LocalStateMachine]:
    """Create the assembly's state machines in moto, their definitions resolved against the local app."""
    machines = {}
    functions = {spec.logical_id: spec.name for spec in assembly.functions}
    for spec in assembly.state_machines:
        name = str(resolver.resolve(spec.name)) if spec.name else local_name(assembly.stack_name, spec.logical_id, 80)
        text = str(resolver.resolve(spec.definition))
        values = {
            key: _function_arn(functions[spec.functions[key]]) if key in spec.functions else resolver.resolve(value)
            for key, value in spec.substitutions.items()
        }
        for key, value in values.items():  # CloudFormation's DefinitionSubstitutions
            text = text.replace(f"${{{key}}}", str(value))
        arn = stepfunctions.create_state_machine(
            name=name, definition=text, roleArn=f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{name}"
        )["stateMachineArn"]
        resolver.refs[spec.logical_id] = arn
        resolver.attributes[(spec.logical_id, "Arn")] = arn
        resolver.attributes[(spec.logical_id, "Name")] = name
        queues = tuple(queue_urls[q] for q in spec.failure_queue_ids if q in queue_urls)
        machines[spec.logical_id] = LocalStateMachine(spec.logical_id, name, arn, json.loads(text), queues)
    return machines


def _function_arn(name: str) -> str:
    return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{name}"


class ExecutionRunner:
    """Runs every execution moto holds for the app's state machines, on the local function workers."""

    def __init__(
        self,
        machines: dict[str, LocalStateMachine],
        pools: dict[str, FunctionPool],
        aws: Any,
        progress_dir: Path,
        on_finish: Callable[[ExecutionReport], None] | None = None,
    ) -> None:
        self.machines = machines
        self._pools = {pool.runtime.name: pool for pool in pools.values()}
        self._aws = aws
        self.progress_dir = progress_dir
        self._on_finish = on_finish
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.reports: dict[str, ExecutionReport] = {}

    def start(self) -> None:
        if not self.machines:
            return
        self.progress_dir.mkdir(parents=True, exist_ok=True)
        thread = threading.Thread(target=self._poll, name="executions", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _poll(self) -> None:
        states = self._aws.client("stepfunctions")
        while not self._stop.wait(POLL_S):
            for machine in self.machines.values():
                try:
                    running = states.list_executions(stateMachineArn=machine.arn, statusFilter="RUNNING")["executions"]
                except Exception:  # moto stopping, or a transient error: try again shortly
                    logger.debug("listing executions of %s failed", machine.name, exc_info=True)
                    continue
                for entry in running:
                    if entry["executionArn"] not in self._seen:
                        self._begin(states, machine, entry)

    def _begin(self, states: Any, machine: LocalStateMachine, entry: dict[str, Any]) -> None:
        """Run one new execution on a thread of its own; a lookup that fails is tried on the next poll."""
        try:
            described = states.describe_execution(executionArn=entry["executionArn"])
            execution_input = json.loads(described["input"])
        except Exception:  # moto stopping, or a transient error
            logger.debug("describing %s failed", entry["executionArn"], exc_info=True)
            return
        thread = threading.Thread(
            target=self._run,
            args=(machine, entry["executionArn"], entry["name"], execution_input),
            name=f"execution-{entry['name'][:20]}",
            daemon=True,
        )
        thread.start()
        self._seen.add(entry["executionArn"])
        self._threads.append(thread)

    def _invoke(self, function_arn: str, payload: dict[str, Any]) -> Any:
        name = function_arn.split(":function:", 1)[-1].split(":", 1)[0]
        pool = self._pools.get(name)
        if pool is None:
            raise TaskFailed("Lambda.ResourceNotFoundException", f"no local function {name!r}")
        invocation = pool.invoke(payload)
        if invocation.ok:
            return invocation.payload
        error = invocation.error or {}
        raise TaskFailed(str(error.get("errorType") or "Lambda.Unknown"), json.dumps(error)[:32768])

    def _run(self, machine: LocalStateMachine, arn: str, name: str, execution_input: dict[str, Any]) -> None:
        report = ExecutionReport(name=name, state_machine=machine.name)
        self.reports[name] = report
        concurrency = max((pool.concurrency for pool in self._pools.values()), default=1)

        written = [0.0]

        def progress(_: MapProgress) -> None:
            # called for every item read: written at most every PROGRESS_S, never on the reading path's every line
            now = time.monotonic()
            if now - written[0] >= PROGRESS_S:
                written[0] = now
                report.maps = [asdict(p) for p in execution.progress]
                self._write(report)

        execution = Execution(
            machine.definition,
            self._invoke,
            self._aws.client("s3"),
            max_concurrency=concurrency,
            on_progress=progress,
            name=name,
            state_machine_arn=machine.arn,
        )
        try:
            report.output = execution.run(execution_input)
            report.status = "SUCCEEDED"
        except StatesError as exc:
            report.status, report.error, report.cause = "FAILED", exc.error, exc.cause
        except Exception as exc:  # a fault of the executor itself: the execution fails, as States.Runtime would
            logger.exception("execution %s failed", name)
            report.status, report.error, report.cause = "FAILED", "States.Runtime", f"{type(exc).__name__}: {exc}"
        report.maps = [asdict(p) for p in execution.progress]
        self._record(machine, arn, report)
        self._write(report)
        if self._on_finish is not None:
            self._on_finish(report)

    def _record(self, machine: LocalStateMachine, arn: str, report: ExecutionReport) -> None:
        """The outcome in moto, and a failed execution's event in its failure queues."""
        from moto.core.utils import utcnow
        from moto.stepfunctions.models import stepfunctions_backends

        execution = stepfunctions_backends[LOCAL_ACCOUNT][LOCAL_REGION].describe_execution(arn)
        execution.status = report.status
        execution.stop_date = utcnow()
        execution.output = json.dumps(report.output) if report.status == "SUCCEEDED" else None
        execution.error, execution.cause = report.error, report.cause
        if report.status == "SUCCEEDED":
            return
        event = {
            "version": "0",
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "account": LOCAL_ACCOUNT,
            "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": LOCAL_REGION,
            "resources": [arn],
            "detail": {
                "executionArn": arn,
                "stateMachineArn": machine.arn,
                "name": report.name,
                "status": report.status,
                "error": report.error,
                "cause": report.cause,
            },
        }
        for url in machine.failure_queue_urls:
            self._aws.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps(event))

    def _write(self, report: ExecutionReport) -> None:
        path = self.progress_dir / f"{report.name}.json"
        temporary = path.with_suffix(f".{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps(asdict(report), default=str))
        temporary.replace(path)


def read_progress(progress_dir: Path, name: str) -> dict[str, Any] | None:
    """An execution's report, or None before it is first written."""
    try:
        return dict(json.loads((progress_dir / f"{name}.json").read_text()))
    except (OSError, ValueError):
        return None

"""A local executor of the JSONPath Amazon States Language, enough for the app's state machines.

moto stores state machines but cannot run their Lambda tasks without Docker, so ``onnxfn serve``
runs the synthesized definition here: Pass, Succeed, Fail, Choice, Task (Lambda, directly or
through ``lambda:invoke``) and Map, inline or distributed, reading JSONL or CSV from S3 with
``ItemReader`` and batching with ``ItemBatcher``. The definition is checked when an
:class:`Execution` is made; anything outside that subset is refused then (:class:`UnsupportedDefinition`),
never half-run. An S3 object is streamed: batches are formed as lines arrive and handed to a
thread pool, with a bounded number waiting, so a large file is never held whole.
"""

from __future__ import annotations

import csv
import datetime
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from onnxfn.local.states_checks import CSV_DELIMITERS, LAMBDA_INVOKE, validate
from onnxfn.local.states_paths import (
    RUNTIME,
    StatesError,
    TaskFailed,
    UnsupportedDefinition,
    apply_template,
    read_path,
    rule_matches,
    write_path,
)

__all__ = ["Execution", "MapProgress", "StatesError", "TaskFailed", "UnsupportedDefinition", "validate"]

DEFAULT_CONCURRENCY = 40  # Step Functions' ceiling for an inline Map; the local cap unless told otherwise
READ_CHUNK = 64 * 1024
# Errors a retrier or catcher never sees: Step Functions fails the execution on them outright.
UNCATCHABLE = {RUNTIME, "States.DataLimitExceeded"}

logger = logging.getLogger("onnxfn.local")


@dataclass
class MapProgress:
    """One run of a Map state, updated as it goes (read it from any thread)."""

    state: str
    items: int = 0  # items read so far
    batches: int = 0  # child executions formed so far (one per item without an ItemBatcher)
    done: int = 0  # child executions that succeeded
    failed: int = 0  # child executions that failed after their own retries
    finished: bool = False


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error_matches(names: list[str], error: str) -> bool:
    if error in UNCATCHABLE:
        return False
    return error in names or "States.ALL" in names or ("States.TaskFailed" in names and error != "States.Timeout")


class Execution:
    """One execution of a state machine definition, run in the calling thread (Map iterations in a pool).

    ``invoke(function_arn, payload)`` calls a Lambda function and returns its decoded result, raising
    :class:`TaskFailed` when the function fails; ``s3`` is a boto3 S3 client for ``ItemReader``.
    ``max_concurrency`` caps the threads of any one Map state (default 40).
    """

    def __init__(
        self,
        definition: dict[str, Any],
        invoke: Callable[[str, dict[str, Any]], Any],
        s3: Any,
        *,
        max_concurrency: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_progress: Callable[[MapProgress], None] | None = None,
        name: str = "local",
        state_machine_arn: str = "arn:aws:states:local:000000000000:stateMachine:local",
    ) -> None:
        validate(definition)
        self.definition = definition
        self.invoke = invoke
        self.s3 = s3
        self.max_concurrency = max_concurrency or DEFAULT_CONCURRENCY
        self.sleep = sleep
        self.on_progress = on_progress
        self.name = name
        self.state_machine_arn = state_machine_arn
        self.progress: list[MapProgress] = []
        self._lock = threading.Lock()

    def run(self, execution_input: dict[str, Any]) -> Any:
        """The execution's output; :class:`StatesError` when it fails (a Fail state included)."""
        execution = {
            "Id": f"{self.state_machine_arn.replace(':stateMachine:', ':execution:')}:{self.name}",
            "Input": execution_input,
            "Name": self.name,
            "StartTime": _now(),
        }
        machine = {"Id": self.state_machine_arn, "Name": self.state_machine_arn.rsplit(":", 1)[-1]}
        return self._run_machine(self.definition, execution_input, {"Execution": execution, "StateMachine": machine})

    def _run_machine(self, machine: dict[str, Any], data: Any, context: dict[str, Any]) -> Any:
        name: str | None = machine["StartAt"]
        while name is not None:
            state_context = {**context, "State": {"Name": name, "EnteredTime": _now(), "RetryCount": 0}}
            data, name = self._run_state(name, machine["States"][name], data, state_context)
        return data

    def _run_state(self, name: str, state: dict[str, Any], raw: Any, context: dict[str, Any]) -> tuple[Any, str | None]:
        kind = state["Type"]
        if kind == "Fail":
            raise StatesError(state.get("Error", ""), state.get("Cause", ""))
        effective = _select(state.get("InputPath", "$"), raw, context, "InputPath")
        if kind in ("Choice", "Succeed"):
            following = self._choose(state, effective, context) if kind == "Choice" else None
            return _select(state.get("OutputPath", "$"), effective, context, "OutputPath"), following
        try:
            if kind == "Pass":
                parameters = state.get("Parameters")
                result = state["Result"] if "Result" in state else _parameters(parameters, effective, context)
            else:
                result = self._attempt(name, state, effective, context)
            if "ResultSelector" in state:
                result = apply_template(state["ResultSelector"], result, context)
            result_path = state.get("ResultPath", "$")
            output = raw if result_path is None else write_path(raw, result_path, result)
        except StatesError as exc:
            catcher = next((c for c in state.get("Catch", []) if _error_matches(c["ErrorEquals"], exc.error)), None)
            if catcher is None:
                raise
            error_output = {"Error": exc.error, "Cause": exc.cause}
            result_path = catcher.get("ResultPath", "$")
            return (raw if result_path is None else write_path(raw, result_path, error_output)), catcher["Next"]
        return _select(state.get("OutputPath", "$"), output, context, "OutputPath"), state.get("Next")

    def _choose(self, state: dict[str, Any], data: Any, context: dict[str, Any]) -> str:
        for rule in state["Choices"]:
            if rule_matches(rule, data, context):
                return str(rule["Next"])
        if "Default" in state:
            return str(state["Default"])
        raise StatesError("States.NoChoiceMatched", f"no Choice rule matched and there is no Default: {data!r:.200}")

    def _attempt(self, name: str, state: dict[str, Any], data: Any, context: dict[str, Any]) -> Any:
        """Run a Task or Map state's work, retrying as its ``Retry`` says."""
        retriers: list[dict[str, Any]] = state.get("Retry", [])
        attempts = [0] * len(retriers)
        while True:
            try:
                if state["Type"] == "Map":
                    return self._map(name, state, data, context)
                return self._task(state, data, context)
            except StatesError as exc:
                # The first retrier naming the error decides alone, even once its attempts are spent.
                index = next((i for i, r in enumerate(retriers) if _error_matches(r["ErrorEquals"], exc.error)), None)
                if index is None or attempts[index] >= retriers[index].get("MaxAttempts", 3):
                    raise
                retrier = retriers[index]
                delay = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** attempts[index]
                delay = min(delay, retrier.get("MaxDelaySeconds", delay))
                attempts[index] += 1
                logger.info("state %s: %s, retry %d in %.1f s", name, exc.error, attempts[index], delay)
                self.sleep(delay)
                context = {**context, "State": {**context["State"], "RetryCount": sum(attempts)}}

    def _task(self, state: dict[str, Any], data: Any, context: dict[str, Any]) -> Any:
        payload = _parameters(state.get("Parameters"), data, context)
        if not LAMBDA_INVOKE.fullmatch(state["Resource"]):
            return self._call(state["Resource"], payload)
        function = payload.get("FunctionName")
        if not isinstance(function, str):
            raise StatesError(RUNTIME, f"lambda:invoke needs a FunctionName string, got {function!r}")
        # The Lambda API sends an empty event when no Payload is given.
        result = self._call(function, payload.get("Payload", {}))
        return {"ExecutedVersion": "$LATEST", "Payload": result, "StatusCode": 200}

    def _call(self, function: str, payload: Any) -> Any:
        try:
            return self.invoke(function, payload)
        except StatesError:
            raise
        except Exception as exc:
            # invoke should raise TaskFailed; anything else still fails only this task, with its reason.
            logger.warning("invoking %s raised", function, exc_info=True)
            raise TaskFailed("States.TaskFailed", f"{type(exc).__name__}: {exc}") from exc

    def _report(self, progress: MapProgress, **increments: int) -> None:
        with self._lock:
            for field, amount in increments.items():
                setattr(progress, field, getattr(progress, field) + amount)
        if self.on_progress is not None:
            self.on_progress(progress)

    def _map(self, name: str, state: dict[str, Any], data: Any, context: dict[str, Any]) -> list[Any]:
        processor = state.get("ItemProcessor") or state["Iterator"]
        distributed = processor.get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED"
        progress = MapProgress(state=name)
        with self._lock:
            self.progress.append(progress)
        self._report(progress)
        threshold = _Threshold(state) if distributed else None
        workers = min(state.get("MaxConcurrency") or self.max_concurrency, self.max_concurrency)
        pending = threading.BoundedSemaphore(2 * workers)  # batches formed but not finished
        stop = threading.Event()
        results: list[Any] = []
        failures: list[BaseException] = []  # what ends the run early, first one first

        def child(index: int, size: int, child_input: Any) -> None:
            try:
                if stop.is_set():
                    return
                child_context = {k: v for k, v in context.items() if k != "State"}
                if distributed:  # each child is an execution of its own, as in Step Functions
                    child_context["Execution"] = {**context["Execution"], "Input": child_input, "StartTime": _now()}
                results[index] = self._run_machine(processor, child_input, child_context)
                self._report(progress, done=1)
            except StatesError as exc:
                results[index] = {"Error": exc.error, "Cause": exc.cause}
                if threshold is None or threshold.fail(size):
                    failures.append(exc)
                    stop.set()
                self._report(progress, failed=1)
            except BaseException as exc:  # a bug, not a failed iteration: end the run and show it
                failures.append(exc)
                stop.set()
            finally:
                pending.release()

        inputs = self._map_inputs(state, data, context, progress)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"map-{name}") as pool:
            try:
                for index, (size, child_input) in enumerate(inputs):
                    pending.acquire()
                    if stop.is_set():
                        pending.release()
                        break
                    results.append(None)
                    if threshold is not None:
                        threshold.total += size
                    pool.submit(child, index, size, child_input)
            except BaseException:
                stop.set()  # the reader failed: start nothing more, let what runs finish
                raise
            finally:
                inputs.close()  # closes the S3 stream when the run ends before the object does
                pool.shutdown(wait=True)
                progress.finished = True
                self._report(progress)
        if failures and not isinstance(failures[0], StatesError):
            raise failures[0]
        if threshold is not None and (failures or threshold.exceeded()):
            raise StatesError("States.ExceedToleratedFailureThreshold", threshold.cause())
        if failures:
            raise failures[0]
        return results

    def _map_inputs(
        self, state: dict[str, Any], data: Any, context: dict[str, Any], progress: MapProgress
    ) -> Generator[tuple[int, Any], None, None]:
        """``(items, child input)`` per child execution, read and batched lazily."""
        selector = state.get("ItemSelector", state.get("Parameters"))

        def selected() -> Iterator[Any]:
            for index, item in enumerate(self._items(state, data, context)):
                self._report(progress, items=1)
                item_context = {**context, "Map": {"Item": {"Index": index, "Value": item}}}
                yield item if selector is None else apply_template(selector, data, item_context)

        batcher = state.get("ItemBatcher")
        if batcher is None:
            for item in selected():
                self._report(progress, batches=1)
                yield 1, item
            return
        head = {}
        if "BatchInput" in batcher:
            head["BatchInput"] = apply_template(batcher["BatchInput"], data, context)
        for batch in _batches(selected(), batcher.get("MaxItemsPerBatch"), batcher.get("MaxInputBytesPerBatch"), head):
            self._report(progress, batches=1)
            yield len(batch), {"Items": batch, **head}

    def _items(self, state: dict[str, Any], data: Any, context: dict[str, Any]) -> Iterable[Any]:
        reader = state.get("ItemReader")
        if reader is None:
            items = read_path(state.get("ItemsPath", "$"), data, context, field="ItemsPath")
            if not isinstance(items, list):
                raise StatesError(RUNTIME, f"ItemsPath selects {type(items).__name__}, not an array")
            return items
        config = reader.get("ReaderConfig", {})
        lines = self._s3_lines(apply_template(reader["Parameters"], data, context))
        items = _jsonl(lines) if config["InputType"] == "JSONL" else _csv(lines, config)
        return itertools.islice(items, config["MaxItems"]) if config.get("MaxItems") else items

    def _s3_lines(self, location: dict[str, Any]) -> Iterator[str]:
        """The object's lines, decoded, fetched as they are consumed."""
        where = f"s3://{location.get('Bucket')}/{location.get('Key')}"
        try:
            body = self.s3.get_object(**location)["Body"]
        except (ClientError, BotoCoreError) as exc:
            raise StatesError("States.ItemReaderFailed", f"cannot read {where}: {exc}") from exc
        try:
            for number, raw in enumerate(body.iter_lines(chunk_size=READ_CHUNK, keepends=True), 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise StatesError("States.ItemReaderFailed", f"{where} line {number} is not UTF-8") from exc
                yield line.removeprefix("\ufeff") if number == 1 else line
        except (ClientError, BotoCoreError) as exc:
            raise StatesError("States.ItemReaderFailed", f"reading {where} failed: {exc}") from exc
        finally:
            body.close()


class _Threshold:
    """A distributed Map's tolerated failures, counted in items as Step Functions counts them."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.count: int | None = state.get("ToleratedFailureCount")
        self.percentage: float | None = state.get("ToleratedFailurePercentage")
        if self.count is None and self.percentage is None:
            self.count = 0
        self.total = 0
        self.failed = 0
        self._lock = threading.Lock()

    def fail(self, items: int) -> bool:
        """Count a failed child of ``items`` items; True once the count alone is exceeded."""
        with self._lock:
            self.failed += items
            return self.count is not None and self.failed > self.count

    def exceeded(self) -> bool:
        """At the end, when the total is known: the percentage too."""
        over_count = self.count is not None and self.failed > self.count
        return over_count or (self.percentage is not None and self.failed * 100 > self.percentage * self.total)

    def cause(self) -> str:
        return (
            f"the tolerated failure threshold was exceeded: {self.failed} of {self.total} items failed "
            f"(tolerated: count {self.count}, percentage {self.percentage})"
        )


def _select(path: str | None, data: Any, context: Any, field: str) -> Any:
    """InputPath or OutputPath: null gives ``{}``."""
    return {} if path is None else read_path(path, data, context, field=field)


def _parameters(template: Any, data: Any, context: Any) -> Any:
    return data if template is None else apply_template(template, data, context)


def _batches(
    items: Iterable[Any], max_items: int | None, max_bytes: int | None, head: dict[str, Any]
) -> Iterator[list[Any]]:
    """Lists of items, each cut at ``max_items`` or before its JSON input would pass ``max_bytes``."""
    empty_size = len(json.dumps({"Items": [], **head}, separators=(",", ":")).encode())
    batch: list[Any] = []
    size = empty_size
    for item in items:
        item_size = len(json.dumps(item, separators=(",", ":")).encode()) + 1  # and its comma
        if batch and max_bytes is not None and size + item_size > max_bytes:
            yield batch
            batch, size = [], empty_size
        # An item too large alone still goes, alone: cutting it is not possible, refusing it would lose it.
        batch.append(item)
        size += item_size
        if max_items is not None and len(batch) >= max_items:
            yield batch
            batch, size = [], empty_size
    if batch:
        yield batch


def _jsonl(lines: Iterable[str]) -> Iterator[Any]:
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise StatesError("States.ItemReaderFailed", f"JSONL line {number} is not JSON: {exc}") from exc


def _csv(lines: Iterable[str], config: dict[str, Any]) -> Iterator[dict[str, str]]:
    reader = csv.reader(lines, delimiter=CSV_DELIMITERS[config.get("CSVDelimiter", "COMMA")])
    try:
        given = config.get("CSVHeaderLocation", "FIRST_ROW") == "GIVEN"
        headers: list[str] | None = config["CSVHeaders"] if given else next(reader, None)
        for row in reader:
            if not row:
                continue  # a blank line
            if headers is None:
                raise StatesError("States.ItemReaderFailed", "the CSV file has no header row")
            # as Step Functions reads it: a short row padded with empty cells, a long one cut at the headers
            cells = (row + [""] * len(headers))[: len(headers)]
            yield dict(zip(headers, cells, strict=True))
    except csv.Error as exc:
        raise StatesError("States.ItemReaderFailed", f"CSV line {reader.line_num}: {exc}") from exc

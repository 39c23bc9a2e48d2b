"""The local States Language executor: a big-batch state machine run against moto's S3.

The Lambda functions are plain callables here: the executor is what is under test, and
``invoke`` is its seam to the functions (``onnxfn serve`` passes its function pool there).
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from onnxfn.local.states import Execution, MapProgress, StatesError, TaskFailed, UnsupportedDefinition

SCORE = "arn:aws:lambda:us-east-1:000000000000:function:score"
REPORT = "arn:aws:lambda:us-east-1:000000000000:function:report:live"  # an alias ARN, as CloudFormation renders it
GET_OBJECT = "arn:aws:states:::s3:getObject"


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


def new_bucket(s3: Any, *, versioned: bool = False) -> str:
    """A bucket of the test's own: moto's in-process backends are shared across the run."""
    name = f"states-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def put(s3: Any, body: str, *, key: str = "input/rows.jsonl", bucket: str | None = None) -> dict[str, str]:
    bucket = bucket or new_bucket(s3)
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
    return {"bucket": bucket, "key": key}


def jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


class FakeLambda:
    """Sums each batch's ``x`` values; fails the batches (by first index) it is told to, a number of times."""

    def __init__(self, *, fail: dict[int, int] | None = None, delay: float = 0.0) -> None:
        self.fail = dict(fail or {})
        self.delay = delay
        self.calls: list[tuple[str, Any]] = []
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, function: str, payload: Any) -> Any:
        with self._lock:
            self.calls.append((function, payload))
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.delay)
            if function == REPORT:
                return {"reported": payload}
            first = payload["Items"][0]["index"]
            with self._lock:
                failing = self.fail.get(first, 0) > 0
                if failing:
                    self.fail[first] -= 1
            if failing:
                raise TaskFailed("ValueError", f"batch starting at {first} is bad")
            return {"sum": sum(item["row"]["x"] for item in payload["Items"]), "first": first}
        finally:
            with self._lock:
                self.running -= 1

    def batches(self) -> list[Any]:
        return [payload for function, payload in self.calls if function == SCORE]


def scorer(*, retry: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The child workflow of the big batch: one lambda:invoke of the scoring function."""
    invoke: dict[str, Any] = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": SCORE, "Payload.$": "$"},
        "ResultSelector": {"sum.$": "$.Payload.sum", "first.$": "$.Payload.first"},
        "End": True,
    }
    if retry:
        invoke["Retry"] = retry
    return {
        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
        "StartAt": "Invoke",
        "States": {"Invoke": invoke},
    }


def big_batch(**map_fields: Any) -> dict[str, Any]:
    """Choice → distributed Map over an S3 object → a report Task, the shape of the app's big batch."""
    score: dict[str, Any] = {
        "Type": "Map",
        "ItemReader": {
            "Resource": GET_OBJECT,
            "ReaderConfig": {"InputType": "JSONL"},
            "Parameters": {"Bucket.$": "$.bucket", "Key.$": "$.key"},
        },
        "ItemSelector": {"index.$": "$$.Map.Item.Index", "row.$": "$$.Map.Item.Value"},
        "ItemBatcher": {"MaxItemsPerBatch": 3, "BatchInput": {"model.$": "$.model"}},
        "ItemProcessor": scorer(),
        "ResultPath": None,
        "Next": "Report",
    }
    score.update(map_fields)
    return {
        "Comment": "big batch",
        "StartAt": "Route",
        "States": {
            "Route": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.mode", "StringEquals": "batch", "Next": "Score"}],
                "Default": "Nothing",
            },
            "Nothing": {"Type": "Succeed"},
            "Score": score,
            "Report": {"Type": "Task", "Resource": REPORT, "End": True},
        },
    }


def test_choice_routes_to_a_distributed_map_that_batches_selected_items(s3):
    where = put(s3, jsonl([{"x": i} for i in range(7)]))
    execution_input = {"mode": "batch", "model": "digits", **where}
    fake = FakeLambda()
    seen: list[tuple[int, int, int]] = []
    execution = Execution(
        big_batch(), fake, s3, on_progress=lambda p: seen.append((p.items, p.batches, p.done)), name="run-1"
    )

    output = execution.run(execution_input)

    assert [batch["BatchInput"] for batch in fake.batches()] == [{"model": "digits"}] * 3
    items = sorted((item for batch in fake.batches() for item in batch["Items"]), key=lambda item: item["index"])
    assert items == [{"index": i, "row": {"x": i}} for i in range(7)]
    assert sorted(len(batch["Items"]) for batch in fake.batches()) == [1, 3, 3]
    # ResultPath null: the report gets the Map state's input, untouched, through the alias ARN.
    assert fake.calls[-1] == (REPORT, execution_input)
    assert output == {"reported": execution_input}
    assert execution.progress == [MapProgress(state="Score", items=7, batches=3, done=3, failed=0, finished=True)]
    assert seen[-1] == (7, 3, 3)
    assert len(seen) > 7  # reported as items were read, not only at the end


def test_choice_default_skips_the_batch(s3):
    fake = FakeLambda()
    output = Execution(big_batch(), fake, s3).run({"mode": "preview", "n": 1})
    assert output == {"mode": "preview", "n": 1}
    assert fake.calls == []


def test_map_results_come_in_item_order_whatever_order_batches_finish(s3):
    where = put(s3, jsonl([{"x": i} for i in range(12)]))

    def slow_first(function: str, payload: Any) -> Any:
        first = payload["Items"][0]["index"]
        time.sleep(0.03 if first == 0 else 0.0)  # the first batch finishes last
        return {"sum": sum(item["row"]["x"] for item in payload["Items"]), "first": first}

    definition = big_batch(ResultPath="$.scores", ItemBatcher={"MaxItemsPerBatch": 2}, End=True)
    del definition["States"]["Score"]["Next"]
    output = Execution(definition, slow_first, s3, max_concurrency=4).run({"mode": "batch", "model": "m", **where})
    assert output["scores"] == [{"sum": 4 * i + 1, "first": 2 * i} for i in range(6)]
    assert output["bucket"] == where["bucket"]


def csv_map(reader_config: dict[str, Any], **map_fields: Any) -> dict[str, Any]:
    """A distributed Map whose children pass their item through: its result is the items read."""
    processor = {
        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
        "StartAt": "Echo",
        "States": {"Echo": {"Type": "Pass", "End": True}},
    }
    reader = {
        "Resource": GET_OBJECT,
        "ReaderConfig": reader_config,
        "Parameters": {"Bucket.$": "$.bucket", "Key.$": "$.key"},
    }
    return {
        "StartAt": "Rows",
        "States": {
            "Rows": {"Type": "Map", "ItemReader": reader, "ItemProcessor": processor, "End": True, **map_fields}
        },
    }


@pytest.mark.parametrize(
    ("config", "body"),
    [
        ({"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"}, 'id,text\r\n1,"a, b"\r\n2,"two\nlines"\r\n'),
        (
            {"InputType": "CSV", "CSVHeaderLocation": "GIVEN", "CSVHeaders": ["id", "text"]},
            '1,"a, b"\n2,"two\nlines"\n',
        ),
    ],
    ids=["first-row", "given"],
)
def test_csv_items_are_objects_of_header_to_cell(s3, config, body):
    where = put(s3, body, key="rows.csv")
    output = Execution(csv_map(config), FakeLambda(), s3).run(where)
    assert output == [{"id": "1", "text": "a, b"}, {"id": "2", "text": "two\nlines"}]


def test_a_short_csv_row_is_padded_and_a_long_one_cut_at_the_headers(s3):
    """As Step Functions' CSV reader does: empty cells for the missing fields, the extra ones dropped."""
    where = put(s3, "id,text\n1\n2,b,extra\n", key="rows.csv")
    output = Execution(csv_map({"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"}), FakeLambda(), s3).run(where)
    assert output == [{"id": "1", "text": ""}, {"id": "2", "text": "b"}]


def test_max_items_reads_only_that_many(s3):
    where = put(s3, "n\n1\n2\n3\n4\n", key="rows.csv")
    config = {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW", "MaxItems": 2}
    assert Execution(csv_map(config), FakeLambda(), s3).run(where) == [{"n": "1"}, {"n": "2"}]


def test_version_id_reads_the_older_version(s3):
    bucket = new_bucket(s3, versioned=True)
    old = s3.put_object(Bucket=bucket, Key="rows.jsonl", Body=jsonl([{"x": 1}, {"x": 2}]).encode())["VersionId"]
    s3.put_object(Bucket=bucket, Key="rows.jsonl", Body=jsonl([{"x": 100}]).encode())
    definition = big_batch(ResultPath="$.scores")
    definition["States"]["Score"]["ItemReader"]["Parameters"]["VersionId.$"] = "$.version"
    output = Execution(definition, FakeLambda(), s3).run(
        {"mode": "batch", "model": "m", "bucket": bucket, "key": "rows.jsonl", "version": old}
    )
    assert output["reported"]["scores"] == [{"sum": 3, "first": 0}]


def test_retry_succeeds_on_the_second_attempt(s3):
    where = put(s3, jsonl([{"x": 5}]))
    retry = [{"ErrorEquals": ["ValueError"], "IntervalSeconds": 2, "BackoffRate": 3.0, "MaxAttempts": 2}]
    sleeps: list[float] = []
    fake = FakeLambda(fail={0: 1})
    definition = big_batch(ItemProcessor=scorer(retry=retry), ResultPath="$.scores")
    output = Execution(definition, fake, s3, sleep=sleeps.append).run({"mode": "batch", "model": "m", **where})
    assert output["reported"]["scores"] == [{"sum": 5, "first": 0}]
    assert sleeps == [2]
    assert len(fake.batches()) == 2


def test_retry_backs_off_then_gives_up(s3):
    where = put(s3, jsonl([{"x": 5}]))
    retry = [
        {"ErrorEquals": ["Lambda.ServiceException"], "MaxAttempts": 5},  # not this error: never used
        {
            "ErrorEquals": ["States.TaskFailed"],
            "IntervalSeconds": 2,
            "BackoffRate": 3.0,
            "MaxAttempts": 3,
            "MaxDelaySeconds": 10,
        },
    ]
    sleeps: list[float] = []
    fake = FakeLambda(fail={0: 99})
    execution = Execution(big_batch(ItemProcessor=scorer(retry=retry)), fake, s3, sleep=sleeps.append)
    with pytest.raises(StatesError) as failed:
        execution.run({"mode": "batch", "model": "m", **where})
    assert sleeps == [2, 6, 10]  # 2 x 3^n, capped at MaxDelaySeconds
    assert len(fake.batches()) == 4
    assert failed.value.error == "States.ExceedToleratedFailureThreshold"
    assert execution.progress[0].failed == 1


@pytest.mark.parametrize(("tolerated", "succeeds"), [(10, True), (0, False)])
def test_tolerated_failure_percentage(s3, tolerated, succeeds):
    where = put(s3, jsonl([{"x": i} for i in range(10)]))
    definition = big_batch(
        ItemBatcher={"MaxItemsPerBatch": 1}, ToleratedFailurePercentage=tolerated, ResultPath="$.scores"
    )
    execution = Execution(definition, FakeLambda(fail={7: 1}), s3)
    if succeeds:
        scores = execution.run({"mode": "batch", "model": "m", **where})["reported"]["scores"]
        assert scores[7] == {"Error": "ValueError", "Cause": "batch starting at 7 is bad"}
        assert [score.get("sum") for score in scores[:7]] == list(range(7))
    else:
        with pytest.raises(StatesError) as failed:
            execution.run({"mode": "batch", "model": "m", **where})
        assert failed.value.error == "States.ExceedToleratedFailureThreshold"
    assert (execution.progress[0].failed, execution.progress[0].finished) == (1, True)


def test_tolerated_failure_count_counts_the_items_of_failed_batches(s3):
    where = put(s3, jsonl([{"x": i} for i in range(9)]))
    definition = big_batch(ToleratedFailureCount=3, ResultPath="$.scores")  # batches of 3
    assert Execution(definition, FakeLambda(fail={3: 1}), s3).run({"mode": "batch", "model": "m", **where})
    with pytest.raises(StatesError) as failed:
        Execution(definition, FakeLambda(fail={3: 1, 6: 1}), s3).run({"mode": "batch", "model": "m", **where})
    assert failed.value.error == "States.ExceedToleratedFailureThreshold"


def test_catch_routes_the_error_under_its_result_path():
    definition = {
        "StartAt": "Score",
        "States": {
            "Score": {
                "Type": "Task",
                "Resource": SCORE,
                "Catch": [
                    {"ErrorEquals": ["Lambda.ServiceException"], "Next": "Unused"},
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Handle"},
                ],
                "End": True,
            },
            "Unused": {"Type": "Succeed"},
            "Handle": {"Type": "Pass", "End": True},
        },
    }
    output = Execution(definition, FakeLambda(fail={0: 1}), s3=None).run({"Items": [{"index": 0}]})
    assert output == {
        "Items": [{"index": 0}],
        "failure": {"Error": "ValueError", "Cause": "batch starting at 0 is bad"},
    }


def test_a_line_that_is_not_json_fails_the_reader_naming_it(s3):
    where = put(s3, '{"x": 1}\n\n{"x": \n{"x": 3}\n')
    with pytest.raises(StatesError) as failed:
        Execution(big_batch(), FakeLambda(), s3).run({"mode": "batch", "model": "m", **where})
    assert failed.value.error == "States.ItemReaderFailed"
    assert "line 3" in failed.value.cause


@pytest.mark.parametrize(("map_limit", "executor_limit", "bound"), [(3, None, 3), (0, 2, 2)])
def test_max_concurrency_bounds_parallel_invocations(s3, map_limit, executor_limit, bound):
    where = put(s3, jsonl([{"x": i} for i in range(12)]))
    fake = FakeLambda(delay=0.02)
    definition = big_batch(ItemBatcher={"MaxItemsPerBatch": 1}, MaxConcurrency=map_limit)
    Execution(definition, fake, s3, max_concurrency=executor_limit).run({"mode": "batch", "model": "m", **where})
    assert len(fake.batches()) == 12
    assert 1 < fake.peak <= bound


def test_the_object_is_read_as_batches_are_needed(s3):
    where = put(s3, jsonl([{"x": i} for i in range(2000)]))
    lines_read = 0
    read_at_first_call: list[int] = []

    class CountingS3:
        """moto's S3, counting the lines the executor has pulled from the body."""

        def get_object(self, **request: Any) -> Any:
            body = s3.get_object(**request)["Body"]

            class Body:
                def iter_lines(self, **options: Any) -> Iterator[bytes]:
                    nonlocal lines_read
                    for line in body.iter_lines(**options):
                        lines_read += 1
                        yield line

                def close(self) -> None:
                    body.close()

            return {"Body": Body()}

    def score(function: str, payload: Any) -> Any:
        if function == SCORE and not read_at_first_call:
            time.sleep(0.05)  # let the reader run ahead as far as it may
            read_at_first_call.append(lines_read)
        return {"sum": 0, "first": 0}

    definition = big_batch(ItemBatcher={"MaxItemsPerBatch": 10}, MaxConcurrency=1)
    Execution(definition, score, CountingS3()).run({"mode": "batch", "model": "m", **where})
    assert read_at_first_call[0] <= 50  # a few batches ahead of the pool, not the file
    assert lines_read == 2000


def test_max_input_bytes_cuts_batches(s3):
    where = put(s3, jsonl([{"x": i} for i in range(20)]))
    fake = FakeLambda()
    definition = big_batch(ItemBatcher={"MaxItemsPerBatch": 100, "MaxInputBytesPerBatch": 150})
    Execution(definition, fake, s3).run({"mode": "batch", "model": "m", **where})
    sizes = [len(json.dumps(batch, separators=(",", ":"))) for batch in fake.batches()]
    assert len(sizes) > 1
    assert max(sizes) <= 150
    assert sum(len(batch["Items"]) for batch in fake.batches()) == 20


def test_inline_map_over_items_path_fails_with_the_childs_error():
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.batches",
                "Parameters": {"Items.$": "$$.Map.Item.Value", "model.$": "$.model"},
                "Iterator": {"StartAt": "Score", "States": {"Score": {"Type": "Task", "Resource": SCORE, "End": True}}},
                "ResultSelector": {"all.$": "$"},
                "End": True,
            }
        },
    }
    batches = [[{"index": 0, "row": {"x": 1}}], [{"index": 1, "row": {"x": 2}}]]
    output = Execution(definition, FakeLambda(), s3=None).run({"batches": batches, "model": "m"})
    assert output == {"all": [{"sum": 1, "first": 0}, {"sum": 2, "first": 1}]}
    with pytest.raises(StatesError) as failed:
        Execution(definition, FakeLambda(fail={1: 1}), s3=None).run({"batches": batches, "model": "m"})
    assert (failed.value.error, failed.value.cause) == ("ValueError", "batch starting at 1 is bad")


def test_fail_state_raises_its_error_and_cause():
    definition = {
        "StartAt": "Check",
        "States": {
            "Check": {
                "Type": "Choice",
                "Choices": [
                    {
                        "And": [
                            {"Variable": "$.rows", "IsPresent": True},
                            {"Not": {"Variable": "$.rows", "NumericGreaterThan": 0}},
                        ],
                        "Next": "Empty",
                    }
                ],
                "Default": "Done",
            },
            "Empty": {"Type": "Fail", "Error": "Batch.Empty", "Cause": "the input has no rows"},
            "Done": {"Type": "Pass", "Result": {"ok": True}, "ResultPath": "$.check", "End": True},
        },
    }
    with pytest.raises(StatesError) as failed:
        Execution(definition, FakeLambda(), s3=None).run({"rows": 0})
    assert (failed.value.error, failed.value.cause) == ("Batch.Empty", "the input has no rows")
    assert Execution(definition, FakeLambda(), s3=None).run({"rows": 4}) == {"rows": 4, "check": {"ok": True}}
    with pytest.raises(StatesError, match="NoChoiceMatched"):
        definition["States"]["Check"].pop("Default")
        Execution(definition, FakeLambda(), s3=None).run({"rows": 4})


def unsupported(change: str) -> dict[str, Any]:
    definition = big_batch()
    score = definition["States"]["Score"]
    if change == "parallel":
        definition["States"]["Route"] = {"Type": "Parallel", "Branches": [], "End": True}
    elif change == "result-writer":
        score["ResultWriter"] = {"Resource": "arn:aws:states:::s3:putObject", "Parameters": {"Bucket": "b"}}
    elif change == "jsonata":
        definition["QueryLanguage"] = "JSONata"
    elif change == "intrinsic":
        score["ItemSelector"]["id.$"] = "States.Format('{}-{}', $.model, $$.Map.Item.Index)"
    elif change == "json-reader":
        score["ItemReader"]["ReaderConfig"] = {"InputType": "JSON"}
    elif change == "wildcard":
        score["ItemSelector"]["ids.$"] = "$.rows[*].id"
    elif change == "nested-wait":
        score["ItemProcessor"]["States"]["Invoke"] = {"Type": "Wait", "Seconds": 1, "End": True}
    elif change == "inline-batcher":
        score["ItemProcessor"]["ProcessorConfig"] = {"Mode": "INLINE"}
    return definition


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("parallel", r'state "Route".*"Type".*Parallel'),
        ("result-writer", r'state "Score".*"ResultWriter"'),
        ("jsonata", "QueryLanguage"),
        ("intrinsic", r'state "Score".*"ItemSelector".*intrinsic'),
        ("json-reader", r'state "Score".*"ItemReader".*InputType'),
        ("wildcard", r'state "Score".*"ItemSelector"'),
        ("nested-wait", r'state "Invoke" \(in the ItemProcessor of "Score"\).*Wait'),
        ("inline-batcher", r'state "Score".*"ItemReader".*DISTRIBUTED'),
    ],
)
def test_definitions_outside_the_subset_are_refused_up_front(change, message):
    fake = FakeLambda()
    with pytest.raises(UnsupportedDefinition, match=message):
        Execution(unsupported(change), fake, s3=None)
    assert fake.calls == []


def test_the_definition_is_not_changed_by_a_run(s3):
    where = put(s3, jsonl([{"x": 1}]))
    definition = big_batch()
    before = copy.deepcopy(definition)
    Execution(definition, FakeLambda(), s3).run({"mode": "batch", "model": "m", **where})
    assert definition == before

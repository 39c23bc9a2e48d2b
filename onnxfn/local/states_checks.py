"""Checking a state machine definition before it runs: :func:`validate` refuses, by state and field,
anything outside the subset :mod:`onnxfn.local.states` executes."""

from __future__ import annotations

import re
from typing import Any

from onnxfn.local.states_paths import (
    UnsupportedDefinition,
    at_field,
    check_reference_path,
    check_rule,
    check_template,
    is_number,
    parse_path,
)

LAMBDA_FUNCTION = re.compile(r"arn:[\w-]+:lambda:[\w-]+:\d{12}:function:[\w.-]+(:[\w$-]+)?")
LAMBDA_INVOKE = re.compile(r"arn:[\w-]+:states:::lambda:invoke")
S3_GET_OBJECT = re.compile(r"arn:[\w-]+:states:::s3:getObject")
CSV_DELIMITERS = {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}


def _names(text: str) -> set[str]:
    return set(text.split())


_RESULTS = "Type Comment InputPath OutputPath Next End ResultPath "
_STATE_FIELDS = {
    "Pass": _names(_RESULTS + "Parameters Result"),
    "Task": _names(_RESULTS + "Parameters ResultSelector Resource Retry Catch TimeoutSeconds"),
    "Choice": _names("Type Comment InputPath OutputPath Choices Default"),
    "Succeed": _names("Type Comment InputPath OutputPath"),
    "Fail": _names("Type Comment Error Cause"),
    "Map": _names(
        _RESULTS + "ResultSelector Retry Catch ItemProcessor Iterator ItemsPath ItemSelector Parameters "
        "MaxConcurrency ItemReader ItemBatcher ToleratedFailureCount ToleratedFailurePercentage Label"
    ),
}
_ORDER = ["ItemReader", "ItemBatcher", "ToleratedFailureCount", "ToleratedFailurePercentage", "Label"]
_DISTRIBUTED_ONLY = set(_ORDER)  # checked in _ORDER, so a definition gets the same message every run
_RETRIER = _names("ErrorEquals IntervalSeconds MaxAttempts BackoffRate MaxDelaySeconds JitterStrategy Comment")
_READER_CONFIG = _names("InputType CSVHeaderLocation CSVHeaders CSVDelimiter MaxItems")


def validate(definition: Any) -> None:
    """Refuse, before anything runs, a definition outside the subset the local executor runs.

    Raises
    ------
    UnsupportedDefinition
        Naming the state and the field, and what is supported instead.
    """
    if not isinstance(definition, dict):
        raise UnsupportedDefinition("a state machine definition is a JSON object")
    if definition.get("QueryLanguage", "JSONPath") != "JSONPath":
        raise UnsupportedDefinition(f"QueryLanguage {definition['QueryLanguage']!r} is not supported: only JSONPath")
    if extra := set(definition) - {"StartAt", "States", "Comment", "TimeoutSeconds", "Version", "QueryLanguage"}:
        raise UnsupportedDefinition(f"the definition's fields {sorted(extra)} are not supported")
    _check_machine(definition, "")


def _check_machine(machine: Any, within: str) -> None:
    states = machine.get("States") if isinstance(machine, dict) else None
    if not isinstance(states, dict) or not _is_state(machine.get("StartAt"), states):
        raise UnsupportedDefinition(f"{within or 'the definition'}: StartAt must name one of its States")
    for name, state in states.items():
        try:
            _check_state(name, state, states)
        except UnsupportedDefinition:
            raise
        except ValueError as exc:
            raise UnsupportedDefinition(f'state "{name}"{within}: {exc}') from exc


def _is_state(name: Any, states: dict[str, Any]) -> bool:
    return isinstance(name, str) and name in states


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_state(name: str, state: Any, states: dict[str, Any]) -> None:
    kind = str(state.get("Type")) if isinstance(state, dict) else "?"
    _expect(kind in _STATE_FIELDS, f'field "Type": {kind!r} is not supported (only {", ".join(_STATE_FIELDS)})')
    for field in state:
        _expect(field in _STATE_FIELDS[kind], f'field "{field}" is not supported in a {kind} state')
    if "End" in _STATE_FIELDS[kind]:
        _expect(("Next" in state) != (state.get("End") is True), 'field "Next"/"End": exactly one of them is needed')
    for field in ("Next", "Default"):
        _expect(_is_state(state.get(field, name), states), f'field "{field}": there is no state {state.get(field)!r}')
    for field in ("InputPath", "OutputPath", "ItemsPath"):
        if state.get(field) is not None:
            at_field(field, parse_path, state[field])
    if state.get("ResultPath") is not None:
        at_field("ResultPath", check_reference_path, state["ResultPath"])
    for field in ("Parameters", "ResultSelector", "ItemSelector"):
        at_field(field, check_template, state.get(field))
    at_field("Retry", _check_handlers, state.get("Retry", []), _RETRIER, states)
    at_field("Catch", _check_handlers, state.get("Catch", []), _names("ErrorEquals Next ResultPath Comment"), states)
    if kind == "Choice":
        choices = state.get("Choices")
        _expect(isinstance(choices, list) and bool(choices), 'field "Choices": a non-empty list of rules is needed')
        for rule in choices:
            at_field("Choices", check_rule, rule, top=True)
            _expect(_is_state(rule["Next"], states), f'field "Choices": there is no state {rule["Next"]!r}')
    elif kind == "Task":
        at_field("Resource", _check_resource, state.get("Resource"), state.get("Parameters"))
    elif kind == "Map":
        _check_map(name, state)


def _check_handlers(handlers: Any, fields: set[str], states: dict[str, Any]) -> None:
    """``Retry`` (no ``Next`` among ``fields``) or ``Catch``."""
    _expect(isinstance(handlers, list), "a list is needed")
    for handler in handlers:
        _expect(isinstance(handler, dict) and set(handler) <= fields, f"supported fields are {sorted(fields)}")
        names = handler.get("ErrorEquals")
        ok = isinstance(names, list) and bool(names) and all(isinstance(name, str) for name in names)
        _expect(ok, f"ErrorEquals must be a non-empty list of error names, got {names!r}")
        if "Next" in fields:
            _expect(_is_state(handler.get("Next"), states), f"there is no state {handler.get('Next')!r}")
            if handler.get("ResultPath") is not None:
                check_reference_path(handler["ResultPath"])
            continue
        for field, least in (("IntervalSeconds", 1), ("MaxAttempts", 0), ("BackoffRate", 1), ("MaxDelaySeconds", 1)):
            value = handler.get(field, least)
            _expect(is_number(value) and value >= least, f"{field} must be a number >= {least}, got {value!r}")


def _keys(template: Any) -> set[str]:
    return {key.removesuffix(".$") for key in template} if isinstance(template, dict) else set()


def _check_resource(resource: Any, parameters: Any) -> None:
    if isinstance(resource, str) and LAMBDA_INVOKE.fullmatch(resource):
        keys = _keys(parameters)
        ok = "FunctionName" in keys and keys <= {"FunctionName", "Payload"}
        _expect(ok, f"lambda:invoke takes Parameters FunctionName and Payload only, got {sorted(keys)}")
    else:
        ok = isinstance(resource, str) and LAMBDA_FUNCTION.fullmatch(resource) is not None
        _expect(ok, f"only Lambda function ARNs and arn:aws:states:::lambda:invoke are supported, not {resource!r}")


def _check_map(name: str, state: dict[str, Any]) -> None:
    _expect(("ItemProcessor" in state) != ("Iterator" in state), 'field "ItemProcessor": one (or Iterator) is needed')
    _expect(not ("ItemSelector" in state and "Parameters" in state), 'field "Parameters": ItemSelector replaces it')
    _expect(not ("ItemReader" in state and "ItemsPath" in state), 'field "ItemsPath": ItemReader gives the items')
    processor = state.get("ItemProcessor", state.get("Iterator"))
    config = processor.get("ProcessorConfig", {}) if isinstance(processor, dict) else {}
    distributed = isinstance(config, dict) and config.get("Mode") == "DISTRIBUTED"
    modes = (
        [{}, {"Mode": "INLINE"}]
        if not distributed
        else [{"Mode": "DISTRIBUTED", "ExecutionType": t} for t in ("STANDARD", "EXPRESS")]
    )
    _expect(config in modes, f'field "ProcessorConfig": one of {modes} is needed, not {config!r}')
    for field in sorted(_DISTRIBUTED_ONLY, key=_ORDER.index):
        _expect(distributed or field not in state, f'field "{field}": only a DISTRIBUTED Map takes it')
    for field in ("MaxConcurrency", "ToleratedFailureCount", "ToleratedFailurePercentage"):
        value = state.get(field, 0)
        ok = isinstance(value, int) or (field.endswith("Percentage") and is_number(value) and value <= 100)
        _expect(ok and value >= 0, f'field "{field}": a non-negative {field[-10:].lower()} is needed, got {value!r}')
    if "ItemReader" in state:
        at_field("ItemReader", _check_reader, state["ItemReader"])
    if "ItemBatcher" in state:
        at_field("ItemBatcher", _check_batcher, state["ItemBatcher"])
    extra = set(processor) - {"StartAt", "States", "Comment", "ProcessorConfig"} if isinstance(processor, dict) else ()
    _expect(not extra, f'field "ItemProcessor": {sorted(extra)} are not supported')
    _check_machine(processor, f' (in the ItemProcessor of "{name}")')


def _check_reader(reader: Any) -> None:
    fields = {"Resource", "ReaderConfig", "Parameters"}
    _expect(isinstance(reader, dict) and set(reader) <= fields, f"supported fields are {sorted(fields)}")
    _expect(S3_GET_OBJECT.fullmatch(str(reader.get("Resource"))) is not None, "only arn:aws:states:::s3:getObject")
    config = reader.get("ReaderConfig")
    _expect(isinstance(config, dict) and set(config) <= _READER_CONFIG, f"ReaderConfig takes {sorted(_READER_CONFIG)}")
    kind = config.get("InputType")
    _expect(kind in ("JSONL", "CSV"), f"ReaderConfig InputType JSONL or CSV is supported, not {kind!r}")
    if kind == "CSV":
        location = config.get("CSVHeaderLocation", "FIRST_ROW")
        headers = config.get("CSVHeaders")
        named = isinstance(headers, list) and bool(headers) and all(isinstance(header, str) for header in headers)
        ok = (location == "GIVEN" and named) or (location == "FIRST_ROW" and headers is None)
        _expect(ok, "CSVHeaderLocation GIVEN with CSVHeaders (a list of names), or FIRST_ROW without them")
        _expect(config.get("CSVDelimiter", "COMMA") in CSV_DELIMITERS, f"CSVDelimiter: one of {sorted(CSV_DELIMITERS)}")
    else:
        _expect(not {"CSVHeaderLocation", "CSVHeaders", "CSVDelimiter"} & set(config), "CSV fields on JSONL")
    max_items = config.get("MaxItems", 1)
    _expect(isinstance(max_items, int) and max_items >= 1, f"MaxItems: a positive integer, not {max_items!r}")
    keys = _keys(reader.get("Parameters"))
    _expect(
        {"Bucket", "Key"} <= keys <= {"Bucket", "Key", "VersionId"}, f"Parameters: Bucket, Key, VersionId, not {keys}"
    )
    check_template(reader["Parameters"])


def _check_batcher(batcher: Any) -> None:
    fields = {"MaxItemsPerBatch", "MaxInputBytesPerBatch", "BatchInput"}
    _expect(isinstance(batcher, dict) and set(batcher) <= fields, f"supported fields are {sorted(fields)}")
    _expect(bool(set(batcher) & fields - {"BatchInput"}), "MaxItemsPerBatch or MaxInputBytesPerBatch is needed")
    for field in ("MaxItemsPerBatch", "MaxInputBytesPerBatch"):
        value = batcher.get(field, 1)
        _expect(isinstance(value, int) and value >= 1, f"{field} must be a positive integer, got {value!r}")
    _expect(isinstance(batcher.get("BatchInput", {}), dict), "BatchInput must be an object")
    check_template(batcher.get("BatchInput"))

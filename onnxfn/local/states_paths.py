"""The definition side of a JSONPath state machine: errors, paths, templates, Choice rules, checks.

The local Step Functions executor (:mod:`onnxfn.local.states`) reads and writes state data only
through this module, and :func:`validate` refuses a definition outside what it runs. Paths are
the simple JSONPath that state machines use in practice: ``$``, ``$$`` (the context object),
``.name``, ``['name']`` and ``[0]``; wildcards, filters, slices and recursive descent are refused
when the definition is checked, so a run never meets them. The errors live here, the lowest
layer; import them from :mod:`onnxfn.local.states`.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable
from typing import Any

from onnxfn.errors import UserError

RUNTIME = "States.Runtime"
PathStep = str | int


class StatesError(Exception):
    """An error of the execution as Step Functions names it: ``error`` (``States.TaskFailed``) and ``cause``."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause


class TaskFailed(StatesError):
    """A Lambda task failed: ``error`` is the function's ``errorType`` (or ``Lambda.Unknown``)."""


class UnsupportedDefinition(UserError, ValueError):
    """The definition uses a state type, field or value the local executor does not run."""


def parse_path(path: Any) -> tuple[bool, tuple[PathStep, ...]]:
    """``(of the context object, steps)`` of a path; ``ValueError`` says what is not supported."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise ValueError(f"{path!r} is not a JSONPath (expected one starting with $)")
    return _parse(path)


_STEP = re.compile(r"\.([^.\[\]]+)|\['([^']*)'\]|\[\"([^\"]*)\"\]|\[(\d+)\]")


@functools.lru_cache(maxsize=1024)
def _parse(path: str) -> tuple[bool, tuple[PathStep, ...]]:
    context = path.startswith("$$")
    steps: list[PathStep] = []
    at = 2 if context else 1
    while at < len(path):
        step = _STEP.match(path, at)
        if step is None or step[1] == "*":
            raise ValueError(f"{path!r}: only .name, ['name'] and [index] steps are supported, not {path[at:]!r}")
        steps.append(int(step[4]) if step[4] is not None else next(g for g in step.groups() if g is not None))
        at = step.end()
    return context, tuple(steps)


def check_reference_path(path: str) -> None:
    """A ``ResultPath``: names only, into the state input (Step Functions allows no more)."""
    context, steps = parse_path(path)
    if context or any(isinstance(step, int) for step in steps):
        raise ValueError(f"{path!r}: a ResultPath names fields of the state input ($.a.b)")


_MISSING = object()


def _lookup(path: str, data: Any, context: Any) -> Any:
    of_context, steps = parse_path(path)
    node = context if of_context else data
    for step in steps:
        found = isinstance(node, dict) and step in node
        if not (found or (isinstance(node, list) and isinstance(step, int) and step < len(node))):
            return _MISSING
        node = node[step]
    return node


def read_path(path: str, data: Any, context: Any, *, field: str = "path") -> Any:
    """The value at ``path``; a path that selects nothing fails the execution (``States.Runtime``)."""
    value = _lookup(path, data, context)
    if value is _MISSING:
        raise StatesError(RUNTIME, f"the JSONPath {path!r} of {field} could not be found in the input")
    return value


def path_exists(path: str, data: Any, context: Any) -> bool:
    return _lookup(path, data, context) is not _MISSING


def write_path(data: Any, path: str, value: Any) -> Any:
    """``data`` with ``value`` placed at ``path``, creating objects on the way; ``data`` itself is not changed."""
    _, steps = parse_path(path)

    def put(node: Any, rest: tuple[PathStep, ...]) -> Any:
        if not rest:
            return value
        if node is _MISSING:
            node = {}
        if not isinstance(node, dict):
            raise StatesError("States.ResultPathMatchFailure", f"ResultPath {path!r} steps into a non-object")
        key = str(rest[0])
        # Copies only along the path: everything else is shared, and nothing here is ever mutated.
        return {**node, key: put(node.get(key, _MISSING), rest[1:])}

    return put(data, steps)


def check_template(template: Any) -> None:
    """A payload template (``Parameters``, ``ResultSelector``...): every ``key.$`` holds a supported path."""
    if isinstance(template, dict):
        for key, value in template.items():
            if not key.endswith(".$"):
                check_template(value)
            elif isinstance(value, str) and value.startswith("States."):
                raise ValueError(f'"{key}": intrinsic functions ({value.split("(")[0]}) are not supported')
            else:
                _at(key, parse_path, value)
    elif isinstance(template, list):
        for value in template:
            check_template(value)


def apply_template(template: Any, data: Any, context: Any) -> Any:
    """The template with each ``key.$`` replaced by ``key`` and the value its path selects."""
    if isinstance(template, dict):
        return {
            key[:-2] if key.endswith(".$") else key: read_path(value, data, context, field=f'"{key}"')
            if key.endswith(".$")
            else apply_template(value, data, context)
            for key, value in template.items()
        }
    if isinstance(template, list):
        return [apply_template(value, data, context) for value in template]
    return template


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_KINDS: dict[str, Callable[[Any], bool]] = {
    "String": lambda value: isinstance(value, str),
    "Numeric": _number,
    "Boolean": lambda value: isinstance(value, bool),
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": operator.eq,
    "LessThan": operator.lt,
    "GreaterThan": operator.gt,
    "LessThanEquals": operator.le,
    "GreaterThanEquals": operator.ge,
}
_COMPARISONS = {
    kind + compare + suffix: (kind, compare)
    for kind in _KINDS
    for compare in _COMPARE
    if kind != "Boolean" or compare == "Equals"
    for suffix in ("", "Path")
}
_TESTS: dict[str, Callable[[Any], bool]] = {
    "IsNull": lambda value: value is None,
    "IsString": _KINDS["String"],
    "IsNumeric": _number,
    "IsBoolean": _KINDS["Boolean"],
}
_BOOLEANS = ("And", "Or", "Not")


def check_rule(rule: Any, *, top: bool) -> None:
    """A Choice rule: one comparison of ``Variable`` or one of And/Or/Not; ``Next`` on top-level rules only."""
    if not isinstance(rule, dict):
        raise ValueError(f"a rule must be an object, got {rule!r}")
    operators = [key for key in rule if key in _COMPARISONS or key in _TESTS or key in _BOOLEANS or key == "IsPresent"]
    extra = set(rule) - {*operators, "Variable", "Comment", *(("Next",) if top else ())}
    if len(operators) != 1 or extra or (top and "Next" not in rule):
        refused = sorted(extra) or operators
        raise ValueError(f"rule {rule!r}: expected one supported comparison (and Next at top level), got {refused}")
    name = operators[0]
    value = rule[name]
    if name in _BOOLEANS:
        if name != "Not" and (not isinstance(value, list) or not value):
            raise ValueError(f"{name} expects a non-empty list of rules, got {value!r}")
        for inner in value if name != "Not" else [value]:
            check_rule(inner, top=False)
        return
    parse_path(rule.get("Variable", ""))
    if name.endswith("Path"):
        parse_path(value)
    elif name in _TESTS or name == "IsPresent" or name.startswith("Boolean"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} expects true or false, got {value!r}")
    elif not _KINDS[_COMPARISONS[name][0]](value):
        raise ValueError(f"{name} expects a {_COMPARISONS[name][0].lower()} value, got {value!r}")


def rule_matches(rule: dict[str, Any], data: Any, context: Any) -> bool:
    """Whether a checked Choice rule holds; a mismatched type is no match, as in Step Functions."""
    if "And" in rule:
        return all(rule_matches(inner, data, context) for inner in rule["And"])
    if "Or" in rule:
        return any(rule_matches(inner, data, context) for inner in rule["Or"])
    if "Not" in rule:
        return not rule_matches(rule["Not"], data, context)
    variable = rule["Variable"]
    if "IsPresent" in rule:
        return path_exists(variable, data, context) is rule["IsPresent"]
    value = read_path(variable, data, context, field="Variable")
    name = next(key for key in rule if key in _COMPARISONS or key in _TESTS)
    if name in _TESTS:
        return bool(_TESTS[name](value) == rule[name])
    kind, compare = _COMPARISONS[name]
    expected = read_path(rule[name], data, context, field=name) if name.endswith("Path") else rule[name]
    fits = _KINDS[kind]
    return bool(fits(value) and fits(expected) and _COMPARE[compare](value, expected))


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
_DISTRIBUTED_ONLY = _names("ItemReader ItemBatcher ToleratedFailureCount ToleratedFailurePercentage Label")
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


def _at(field: str, check: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    try:
        check(*args, **kwargs)
    except ValueError as exc:
        raise ValueError(f'field "{field}": {exc}') from exc


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
            _at(field, parse_path, state[field])
    if state.get("ResultPath") is not None:
        _at("ResultPath", check_reference_path, state["ResultPath"])
    for field in ("Parameters", "ResultSelector", "ItemSelector"):
        _at(field, check_template, state.get(field))
    _at("Retry", _check_handlers, state.get("Retry", []), _RETRIER, states)
    _at("Catch", _check_handlers, state.get("Catch", []), _names("ErrorEquals Next ResultPath Comment"), states)
    if kind == "Choice":
        choices = state.get("Choices")
        _expect(isinstance(choices, list) and bool(choices), 'field "Choices": a non-empty list of rules is needed')
        for rule in choices:
            _at("Choices", check_rule, rule, top=True)
            _expect(_is_state(rule["Next"], states), f'field "Choices": there is no state {rule["Next"]!r}')
    elif kind == "Task":
        _at("Resource", _check_resource, state.get("Resource"), state.get("Parameters"))
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
            _expect(_number(value) and value >= least, f"{field} must be a number >= {least}, got {value!r}")


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
    for field in _DISTRIBUTED_ONLY:
        _expect(distributed or field not in state, f'field "{field}": only a DISTRIBUTED Map takes it')
    for field in ("MaxConcurrency", "ToleratedFailureCount", "ToleratedFailurePercentage"):
        value = state.get(field, 0)
        ok = isinstance(value, int) or (field.endswith("Percentage") and _number(value) and value <= 100)
        _expect(ok and value >= 0, f'field "{field}": a non-negative {field[-10:].lower()} is needed, got {value!r}')
    if "ItemReader" in state:
        _at("ItemReader", _check_reader, state["ItemReader"])
    if "ItemBatcher" in state:
        _at("ItemBatcher", _check_batcher, state["ItemBatcher"])
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

"""The data side of a JSONPath state machine: errors, paths, templates, Choice rules.

The local Step Functions executor (:mod:`onnxfn.local.states`) reads and writes state data only
through this module. Paths are the simple JSONPath that state machines use in practice: ``$``,
``$$`` (the context object), ``.name``, ``['name']`` and ``[0]``; wildcards, filters, slices and
recursive descent are refused when the definition is checked (:mod:`onnxfn.local.states_checks`),
so a run never meets them. The errors live here, the lowest layer; import them from :mod:`onnxfn.local.states`.
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
                at_field(key, parse_path, value)
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


def at_field(field: str, check: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    try:
        check(*args, **kwargs)
    except ValueError as exc:
        raise ValueError(f'field "{field}": {exc}') from exc


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_KINDS: dict[str, Callable[[Any], bool]] = {
    "String": lambda value: isinstance(value, str),
    "Numeric": is_number,
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
    "IsNumeric": is_number,
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

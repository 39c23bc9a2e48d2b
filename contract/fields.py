"""Strict parsing of JSON fields, shared by the manifest and its pipeline configs: every error names
the path of the field it is about (``manifest.inputs[0].shape``)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from contract.quoting import quote


class ManifestError(ValueError):
    """A manifest does not follow the schema; raised at build and load time."""


def mapping(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ManifestError(f"{where}: expected an object, got {type(data).__name__}")
    return data


def only(data: Mapping[str, Any], where: str, allowed: Sequence[str]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def req(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ManifestError(f"{where}.{key}: required field is missing")
    return data[key]


def string(value: Any, where: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{where}: expected a string, got {type(value).__name__}")
    if pattern is not None and not pattern.match(value):
        raise ManifestError(f"{where}: {value!r} does not match {pattern.pattern}")
    return value


def integer(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ManifestError(f"{where}: expected an integer >= {minimum}, got {quote(value)}")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ManifestError(f"{where}: expected true or false, got {quote(value)}")
    return value


def number(value: Any, where: str, low: float | None = None, high: float | None = None) -> float:
    """A finite JSON number within [low, high] when they are given."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ManifestError(f"{where}: expected a number, got {quote(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ManifestError(f"{where}: expected a number from {low} to {high}, got {quote(value)}")
    return float(value)


def numbers(value: Any, where: str, count: int) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != count:
        raise ManifestError(f"{where}: expected a list of {count} numbers, got {quote(value)}")
    return tuple(number(v, f"{where}[{i}]") for i, v in enumerate(value))


def strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: expected a list of strings")
    return tuple(value)


def choice(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ManifestError(f"{where}: expected one of {', '.join(allowed)}, got {quote(value)}")
    return str(value)

"""The checks every ``cdk.json`` setting goes through: each failure names the key, the value and what
is allowed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A setting in cdk.json is wrong; the message names the key, the value and what is allowed."""


def _choice(key: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not allowed; expected one of {', '.join(map(str, allowed))}")
    return value


def _int(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key}: {value!r} is not allowed; expected an integer from {low} to {high}")
    return value


def _number(key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{key}: {value!r} is not allowed; expected a number from {low} to {high}")
    return float(value)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not allowed; expected true or false")
    return value


def _known(key: str, given: Mapping[str, Any], allowed: list[str]) -> None:
    for name in given:
        if name not in allowed:
            raise ConfigError(f"{key}.{name}: unknown setting; allowed: {', '.join(allowed)}")

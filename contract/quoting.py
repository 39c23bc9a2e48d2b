"""Client values quoted in error messages: bounded in depth and length, so a value nested 1,000
deep or megabytes long can neither exhaust the recursion limit nor build a huge string."""

from __future__ import annotations

import reprlib
from typing import Any

_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxlist, _QUOTE.maxdict, _QUOTE.maxstring, _QUOTE.maxother = 3, 8, 8, 80, 80


def quote(value: Any) -> str:
    """A short ``repr`` of a client's value for an error message."""
    return _QUOTE.repr(value)

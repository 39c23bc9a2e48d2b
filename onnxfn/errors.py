"""The one base of failures the person running ``onnxfn`` can fix.

The CLI prints a :class:`UserError` as one line and exits 2. Anything else that escapes a command
is a bug in onnxfn and keeps its traceback, so it is never mistaken for a user's mistake.
"""

from __future__ import annotations


class UserError(Exception):
    """Wrong input, a missing tool or file, a name that does not exist: the message says what to do."""


class UnknownName(UserError):
    """A model or function the running app does not have."""

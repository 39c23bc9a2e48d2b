"""The environment variable names the handlers read, taken from ``handlers/runtime/settings.py``.

The stacks may not import the handlers (they would pull numpy and onnxruntime into synth), yet the
names must be defined once. So the constants are read from the file itself, by path: a rename in
the handlers is a rename here, and a name that disappears fails synth.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

SETTINGS_FILE = Path(__file__).resolve().parents[1] / "handlers" / "runtime" / "settings.py"


@cache
def _constants() -> dict[str, str]:
    tree = ast.parse(SETTINGS_FILE.read_text(), filename=str(SETTINGS_FILE))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.isupper() and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                found[name] = node.value.value
    return found


def env_name(constant: str) -> str:
    """The environment variable a handlers constant names, e.g. ``env_name("MODEL_BUCKET")``."""
    try:
        return _constants()[constant]
    except KeyError as exc:
        raise KeyError(f"{SETTINGS_FILE} defines no constant {constant}") from exc

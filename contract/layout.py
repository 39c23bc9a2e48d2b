"""Where a model's artifact and its data live in the bucket.

The artifact's prefix carries the manifest's sha256, so a rebuilt artifact never overwrites the
objects an older function version (canary, rollback) still loads. The data prefixes are per model,
and each function's role is scoped to its own.
"""

from __future__ import annotations

MANIFEST_FILE = "manifest.json"
MODELS_PREFIX = "models/"


def model_prefix(name: str, version: str | None = None, manifest_sha256: str | None = None) -> str:
    """``models/<name>/`` or, pinned, ``models/<name>/<version>-<sha256[:12]>/``."""
    if version is None:
        return f"{MODELS_PREFIX}{name}/"
    pin = f"-{manifest_sha256[:12]}" if manifest_sha256 else ""
    return f"{MODELS_PREFIX}{name}/{version}{pin}/"


def inbox_prefix(name: str) -> str:
    """Batch files dropped here are scored."""
    return f"inbox/{name}/"


def outbox_prefix(name: str) -> str:
    """Where a batch file's output, errors and summary are written."""
    return f"outbox/{name}/"


def results_prefix(name: str) -> str:
    """Where the queue worker writes each message's answer (or its error)."""
    return f"results/{name}/"


def requests_prefix(name: str) -> str:
    """Where claim-checked requests (over SQS's 256 KB) are read from."""
    return f"requests/{name}/"

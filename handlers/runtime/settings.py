"""The settings a function reads from its environment, checked once at init.

The variables' names, modes and defaults are the contract's (``contract/environment.py``, with the
S3 layout in ``contract/layout.py`` and Lambda's limits in ``contract/limits.py``), which the stacks
set them by.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from contract import layout
from contract.environment import (
    API_AUTH,
    API_AUTH_MODES,
    BIG_BATCH_BYTES,
    BIG_BATCH_FORMATS,
    BIG_BATCH_ROWS,
    BIG_BATCH_STATE_MACHINE,
    CATALOG_KEY,
    DATA_BUCKET,
    FUNCTION_MEMORY_MB,
    INBOX_PREFIX,
    INTRA_OP_THREADS,
    LOAD_MODE,
    LOAD_MODES,
    MANIFEST_SHA256,
    MANIFEST_VERSION_ID,
    MAX_REQUEST_BYTES,
    MODEL_BUCKET,
    MODEL_NAME,
    MODEL_PREFIX,
    OUTBOX_PREFIX,
    REPLY_QUEUES,
    REQUESTS_PREFIX,
    RESULTS_PREFIX,
)
from contract.layout import MANIFEST_FILE
from contract.limits import MAX_VCPUS, MB_PER_VCPU, SYNC_PAYLOAD_BYTES

DEFAULT_MAX_REQUEST_BYTES = SYNC_PAYLOAD_BYTES


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What one function serves and how; read once at init."""

    model_name: str
    bucket: str
    prefix: str
    manifest_sha256: str | None
    manifest_version_id: str | None
    load_mode: str
    max_request_bytes: int
    memory_mb: int | None
    intra_op_threads: int
    catalog_key: str | None = None  # set on the function that serves /swagger: every model's routes

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}{MANIFEST_FILE}"

    def key_for(self, relative_path: str) -> str:
        """S3 key of a file listed in the manifest."""
        return f"{self.prefix}{relative_path}"


@dataclass(frozen=True, kw_only=True)
class DataSettings:
    """Where the event-driven functions read inputs and write outputs (one model's prefixes)."""

    bucket: str
    inbox_prefix: str
    outbox_prefix: str
    results_prefix: str
    requests_prefix: str
    memory_mb: int
    reply_queues: tuple[str, ...] = ()
    big_batch: BigBatchSettings | None = None  # the batch function's hand-off to the state machine


@dataclass(frozen=True, kw_only=True)
class BigBatchSettings:
    """Where files above the threshold go: the model's Distributed Map state machine."""

    state_machine_arn: str
    rows: int | None  # None: predicted from the throughput measured on the file's first rows
    bytes: int | None
    formats: tuple[str, ...]


def load_data_settings(env: Mapping[str, str] | None = None) -> DataSettings:
    """The batch and queue functions' prefixes; defaults follow the model name."""
    env = os.environ if env is None else env
    name = env.get(MODEL_NAME, "").strip()
    if not name:
        raise ValueError(f"{MODEL_NAME} is not set: expected the name of the model this function serves")

    def prefix(var: str, default: str) -> str:
        value = env.get(var, "").strip() or default
        return value if value.endswith("/") else value + "/"

    return DataSettings(
        bucket=(env.get(DATA_BUCKET, "") or env.get(MODEL_BUCKET, "")).strip(),
        inbox_prefix=prefix(INBOX_PREFIX, layout.inbox_prefix(name)),
        outbox_prefix=prefix(OUTBOX_PREFIX, layout.outbox_prefix(name)),
        results_prefix=prefix(RESULTS_PREFIX, layout.results_prefix(name)),
        requests_prefix=prefix(REQUESTS_PREFIX, layout.requests_prefix(name)),
        memory_mb=_int(env, FUNCTION_MEMORY_MB, 1769) or 1769,
        reply_queues=tuple(q.strip() for q in env.get(REPLY_QUEUES, "").split(",") if q.strip()),
        big_batch=_big_batch(env),
    )


def _big_batch(env: Mapping[str, str]) -> BigBatchSettings | None:
    arn = env.get(BIG_BATCH_STATE_MACHINE, "").strip()
    if not arn:
        return None
    formats = tuple(f.strip() for f in env.get(BIG_BATCH_FORMATS, "jsonl").split(",") if f.strip())
    return BigBatchSettings(
        state_machine_arn=arn,
        rows=_int(env, BIG_BATCH_ROWS, None),
        bytes=_int(env, BIG_BATCH_BYTES, None),
        formats=formats,
    )


def vcpus_for_memory(memory_mb: int | None) -> int:
    """vCPUs Lambda gives a function of ``memory_mb``; the host's cores when not in Lambda."""
    if memory_mb is None:
        return max(1, os.cpu_count() or 1)
    return max(1, min(MAX_VCPUS, math.ceil(memory_mb / MB_PER_VCPU)))


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name}: expected an integer, got {raw!r}") from exc
    if value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return value


def load_api_auth(env: Mapping[str, str] | None = None) -> str:
    """How callers authenticate to the API (``API_AUTH``), for the OpenAPI document; ``api_key`` if unset."""
    env = os.environ if env is None else env
    mode = env.get(API_AUTH, "").strip().lower() or "api_key"
    if mode not in API_AUTH_MODES:
        raise ValueError(f"{API_AUTH}: expected one of {', '.join(API_AUTH_MODES)}, got {mode!r}")
    return mode


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check the function's settings; a wrong value names the variable and what is allowed."""
    env = os.environ if env is None else env
    name = env.get(MODEL_NAME, "").strip()
    if not name:
        raise ValueError(f"{MODEL_NAME} is not set: expected the name of the model this function serves")
    load_mode = env.get(LOAD_MODE, "lazy").strip().lower() or "lazy"
    if load_mode not in LOAD_MODES:
        raise ValueError(f"{LOAD_MODE}: expected one of {', '.join(LOAD_MODES)}, got {load_mode!r}")
    prefix = env.get(MODEL_PREFIX, layout.model_prefix(name)).strip()
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    memory_mb = _int(env, FUNCTION_MEMORY_MB, None)
    threads = _int(env, INTRA_OP_THREADS, None) or vcpus_for_memory(memory_mb)
    return Settings(
        model_name=name,
        bucket=env.get(MODEL_BUCKET, "").strip(),
        prefix=prefix,
        manifest_sha256=env.get(MANIFEST_SHA256, "").strip().lower() or None,
        manifest_version_id=env.get(MANIFEST_VERSION_ID, "").strip() or None,
        load_mode=load_mode,
        max_request_bytes=_int(env, MAX_REQUEST_BYTES, DEFAULT_MAX_REQUEST_BYTES) or DEFAULT_MAX_REQUEST_BYTES,
        memory_mb=memory_mb,
        intra_op_threads=threads,
        catalog_key=env.get(CATALOG_KEY, "").strip() or None,
    )

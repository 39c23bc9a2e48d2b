"""Environment variable names (the contract with the infrastructure) and the settings read from them.

Every variable a function reads is named here once. ``stacks/`` sets them by these names; tests
and the local emulator set them the same way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

MODEL_NAME = "MODEL_NAME"
MODEL_BUCKET = "MODEL_BUCKET"
MODEL_PREFIX = "MODEL_PREFIX"
MANIFEST_SHA256 = "MANIFEST_SHA256"
MANIFEST_VERSION_ID = "MANIFEST_VERSION_ID"
LOAD_MODE = "LOAD_MODE"
# Set by Lambda itself: on-demand | provisioned-concurrency | snap-start.
INITIALIZATION_TYPE = "AWS_LAMBDA_INITIALIZATION_TYPE"
MAX_REQUEST_BYTES = "MAX_REQUEST_BYTES"
INTRA_OP_THREADS = "ORT_INTRA_OP_THREADS"
FUNCTION_MEMORY_MB = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
API_AUTH = "API_AUTH"  # how callers authenticate to the API: one of API_AUTH_MODES
METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"

# Event-driven functions (S3 batch files, request queue): where inputs and outputs live.
DATA_BUCKET = "DATA_BUCKET"
INBOX_PREFIX = "INBOX_PREFIX"
OUTBOX_PREFIX = "OUTBOX_PREFIX"
RESULTS_PREFIX = "RESULTS_PREFIX"
REQUESTS_PREFIX = "REQUESTS_PREFIX"
REPLY_QUEUES = "REPLY_QUEUES"  # comma-separated ARNs of the queues answers may be sent to

MANIFEST_FILE = "manifest.json"
# What the handlers read. The stack's "auto" (its default) becomes one of these at synth: eager when
# the artifact fits the init window (stacks/config.py, INIT_LOAD_MAX_BYTES), lazy otherwise.
LOAD_MODES = ("lazy", "eager")
API_AUTH_MODES = ("api_key", "iam")  # an API key in x-api-key, or SigV4-signed requests
DEFAULT_SERVICE = "onnxfn"
DEFAULT_NAMESPACE = "onnxfn"
# Lambda caps a synchronous payload at 6 MB; API Gateway at 10 MB.
DEFAULT_MAX_REQUEST_BYTES = 6 * 1024 * 1024
# Lambda allots one vCPU per 1,769 MB of memory, up to 6 vCPUs at 10,240 MB.
MB_PER_VCPU = 1769
MAX_VCPUS = 6


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
        inbox_prefix=prefix(INBOX_PREFIX, f"inbox/{name}/"),
        outbox_prefix=prefix(OUTBOX_PREFIX, f"outbox/{name}/"),
        results_prefix=prefix(RESULTS_PREFIX, f"results/{name}/"),
        requests_prefix=prefix(REQUESTS_PREFIX, f"requests/{name}/"),
        memory_mb=_int(env, FUNCTION_MEMORY_MB, 1769) or 1769,
        reply_queues=tuple(q.strip() for q in env.get(REPLY_QUEUES, "").split(",") if q.strip()),
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
    prefix = env.get(MODEL_PREFIX, f"models/{name}/").strip()
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
    )

"""boto3 clients, created on first use and kept for warm invocations (boto3 is imported lazily)."""

from __future__ import annotations

from typing import Any

_clients: dict[str, Any] = {}


def client(service: str) -> Any:
    """The execution environment's client for ``service`` (clients are thread-safe)."""
    if service not in _clients:
        import boto3

        _clients[service] = boto3.client(service)  # type: ignore[call-overload]  # the default session: its data loads once
    return _clients[service]


def reset_clients() -> None:
    """Drop every client (SnapStart: credentials and connections must not outlive a snapshot)."""
    _clients.clear()


def s3_client() -> Any:
    return client("s3")


def model_s3_config() -> Any:
    """One attempt per call and bounded waits: the model store's own retries
    (handlers.runtime.retries, within the invocation's remaining time) decide how long to try."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=3, read_timeout=20)


def model_s3_client() -> Any:
    """S3 for the model store: the standard-library reader when the environment holds credentials
    (no boto3 on the cold path, see :mod:`handlers.runtime.s3_read`), else boto3 (see
    :func:`model_s3_config`)."""
    if "s3-model" not in _clients:
        from handlers.runtime.s3_read import from_environment

        reader: Any = from_environment()
        if reader is None:
            import boto3

            reader = boto3.client("s3", config=model_s3_config())
        _clients["s3-model"] = reader
    return _clients["s3-model"]

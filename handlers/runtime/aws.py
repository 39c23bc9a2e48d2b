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


def s3_client() -> Any:
    return client("s3")

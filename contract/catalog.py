"""The API's catalog: every model the app deploys, with its auth and manifest, in one S3 object.

The stack writes it at synth (``encode``) and uploads it with the artifacts; the function serving
``/swagger`` reads it (``decode``) on each request for the document, to document every model's
routes, schemas and examples in one OpenAPI document. Its key is fixed (``CATALOG_KEY``): adding or
changing a model rewrites the object and leaves the configuration of the function that reads it
(its version, SnapStart snapshot, canary) alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contract.environment import API_AUTH_MODES
from contract.manifest import Manifest, ManifestError

CATALOG_PREFIX = "catalog/"
CATALOG_FILE = "catalog.json"
CATALOG_KEY = f"{CATALOG_PREFIX}{CATALOG_FILE}"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    auth: str  # one of API_AUTH_MODES
    manifest: Manifest


def encode(models: Sequence[tuple[str, str, Mapping[str, Any]]]) -> bytes:
    """The catalog of ``models`` given as (name, auth, manifest JSON object)."""
    body = {
        "schema_version": SCHEMA_VERSION,
        "models": [{"name": name, "auth": auth, "manifest": dict(manifest)} for name, auth, manifest in models],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def decode(data: bytes) -> tuple[CatalogEntry, ...]:
    """The entries of a catalog; ``ManifestError`` naming what is wrong."""
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise ManifestError(f"catalog: not JSON ({exc})") from exc
    if not isinstance(body, dict) or body.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(f"catalog: expected schema_version {SCHEMA_VERSION}")
    entries = []
    for index, item in enumerate(body.get("models") or []):
        if not isinstance(item, dict) or item.get("auth") not in API_AUTH_MODES:
            raise ManifestError(f"catalog.models[{index}]: expected name, auth ({', '.join(API_AUTH_MODES)}), manifest")
        manifest = Manifest.loads(json.dumps(item.get("manifest")))
        if manifest.name != item.get("name"):
            raise ManifestError(
                f"catalog.models[{index}]: the manifest is of {manifest.name!r}, not {item.get('name')!r}"
            )
        entries.append(CatalogEntry(name=manifest.name, auth=str(item["auth"]), manifest=manifest))
    if not entries:
        raise ManifestError("catalog.models: expected at least one model")
    return tuple(entries)

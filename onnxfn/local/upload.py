"""Uploading an artifact folder to S3 the way a deploy does, and the environment that pins it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from contract import environment as env
from contract import layout
from contract.manifest import Manifest


def upload_artifact(s3: Any, bucket: str, artifact_dir: Path, prefix: str | None = None) -> dict[str, str]:
    """Put the manifest and every file it lists under ``prefix``; return the function environment."""
    manifest_bytes = (artifact_dir / "manifest.json").read_bytes()
    manifest = Manifest.loads(manifest_bytes)
    prefix = prefix or layout.model_prefix(manifest.name, manifest.version)
    for entry in manifest.files:
        s3.put_object(Bucket=bucket, Key=f"{prefix}{entry.path}", Body=(artifact_dir / entry.path).read_bytes())
    put = s3.put_object(Bucket=bucket, Key=f"{prefix}{layout.MANIFEST_FILE}", Body=manifest_bytes)
    environment = {
        env.MODEL_NAME: manifest.name,
        env.MODEL_BUCKET: bucket,
        env.MODEL_PREFIX: prefix,
        env.MANIFEST_SHA256: hashlib.sha256(manifest_bytes).hexdigest(),
    }
    if put.get("VersionId") and put["VersionId"] != "null":
        environment[env.MANIFEST_VERSION_ID] = put["VersionId"]
    return environment

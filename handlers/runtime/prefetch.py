"""The model's bytes downloading while init imports the libraries.

When a function loads its model during init (``LOAD_MODE=eager``), init is two waits that need not
follow each other: importing numpy, Powertools and onnxruntime (CPU, about 200 ms) and reading the
artifact from S3 (network). :func:`start` runs first in init (``handlers/__init__.py``) and begins
the download on a thread, with the standard library only; the model store then takes the bytes
from here (:func:`take`) instead of fetching them itself, and checks them as it checks its own
fetches: the manifest against ``MANIFEST_SHA256``, every file against the manifest. Anything that
goes wrong here is dropped, and the store fetches as usual, with its retries and its errors.

Nothing starts outside a Lambda execution environment (``_HANDLER`` unset), without credentials in
the environment (SnapStart: the store's boto3 path), or when the model loads lazily.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contract.environment import INITIALIZATION_TYPE, LOAD_MODE
from handlers.runtime.s3_read import MAX_PARALLEL_PARTS, PART_BYTES, from_environment, read_ranges
from handlers.runtime.settings import Settings, load_settings


@dataclass(frozen=True)
class Fetched:
    """An object's bytes and their sha256, computed on the download's thread (hashlib releases the
    GIL, so hashing a large model runs beside the imports); the store compares it with the pin."""

    data: bytes
    sha256: str


class Prefetch:
    """One download of the pinned manifest and the files it lists, on a thread."""

    def __init__(self, settings: Settings, reader: Any) -> None:
        self.settings = settings
        self._reader = reader
        self._objects: dict[str, Fetched] = {}
        self._thread = threading.Thread(target=self._run, name="model-prefetch", daemon=True)

    def start(self) -> Prefetch:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            settings, reader = self.settings, self._reader
            raw = reader.get_object(
                Bucket=settings.bucket,
                Key=settings.manifest_key,
                **({"VersionId": settings.manifest_version_id} if settings.manifest_version_id else {}),
            )["Body"].read()
            digest = hashlib.sha256(raw).hexdigest()
            if digest != settings.manifest_sha256:
                return  # the store fetches it again and reports the mismatch
            self._objects[settings.manifest_key] = Fetched(raw, digest)
            for entry in json.loads(raw)["files"]:
                key, size = settings.key_for(str(entry["path"])), int(entry["bytes"])
                if size > PART_BYTES:
                    data = read_ranges(reader, settings.bucket, key, size, PART_BYTES, MAX_PARALLEL_PARTS)
                else:
                    data = reader.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
                self._objects[key] = Fetched(data, hashlib.sha256(data).hexdigest())
        except Exception:
            pass
        finally:
            self._reader = None  # no connection outlives the download

    def take(self, key: str, timeout_s: float) -> Fetched | None:
        """The bytes of ``key`` once the download ends (None if it failed, or after ``timeout_s``)."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            return None
        return self._objects.pop(key, None)


_current: Prefetch | None = None
_lock = threading.Lock()


def wanted(env: Mapping[str, str]) -> bool:
    """In a Lambda execution environment that loads its model during init."""
    in_lambda = bool(env.get("_HANDLER") and env.get("AWS_LAMBDA_FUNCTION_NAME"))
    eager = env.get(LOAD_MODE, "").strip().lower() == "eager" or env.get(INITIALIZATION_TYPE) == "snap-start"
    return in_lambda and eager


def start(env: Mapping[str, str] | None = None) -> Prefetch | None:
    """Begin the download when :func:`wanted`; once per execution environment."""
    global _current
    env = os.environ if env is None else env
    with _lock:
        if _current is not None or not wanted(env):
            return _current
        try:
            settings = load_settings(env)
        except ValueError:
            return None  # the store reports the bad setting on its own
        reader = from_environment(env)
        if reader is None or not settings.bucket or not settings.manifest_sha256:
            return None
        _current = Prefetch(settings, reader).start()
        return _current


def take(key: str, timeout_s: float = 10.0) -> Fetched | None:
    """The prefetched bytes of ``key`` (each handed out once), or None: fetch it yourself."""
    prefetch = _current
    return None if prefetch is None else prefetch.take(key, timeout_s)


def discard() -> None:
    """Forget the download and whatever is left of it (tests; SnapStart, before the snapshot)."""
    global _current
    with _lock:
        _current = None

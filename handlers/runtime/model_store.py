"""Lazy, verified, thread-safe loading of one model from S3.

The first request that needs the model fetches the pinned manifest, checks it against the sha256
the function was deployed with, fetches every file it lists, checks each sha256, and creates the
InferenceSession sized to the function's vCPUs. The result stays in module scope for warm
invocations. A failure is never cached: the next request tries again. onnxruntime is imported
here only.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract.catalog import CatalogEntry
from contract.catalog import decode as decode_catalog
from contract.manifest import Manifest, ManifestError
from handlers.runtime import prefetch, retries
from handlers.runtime.aws import model_s3_client
from handlers.runtime.errors import InvalidInput, ModelUnavailable
from handlers.runtime.observability import MetricUnit, logger, metrics, tracer
from handlers.runtime.pipelines import Pipeline, build_pipeline
from handlers.runtime.s3_read import MAX_PARALLEL_PARTS, PART_BYTES, read_ranges
from handlers.runtime.settings import Settings, load_settings


@dataclass(frozen=True)
class LoadedModel:
    manifest: Manifest
    pipeline: Pipeline
    load_ms: float
    # onnxruntime's error for an input the graph rejects (a value out of range, say): a client error
    input_errors: tuple[type[BaseException], ...] = ()

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Score checked inputs; measured, traced, and with the graph's own rejections as 400s."""
        started = time.perf_counter()
        try:
            with tracer.provider.in_subsegment("## run") as subsegment:
                results = self.pipeline.run(inputs, outputs)
                subsegment.put_annotation("batch", str(_batch_size(inputs)))
        except self.input_errors as exc:
            raise InvalidInput(f"the model rejected the input: {runtime_message(exc)}") from exc
        elapsed = (time.perf_counter() - started) * 1000
        metrics.add_metric(name="InferenceMs", unit=MetricUnit.Milliseconds, value=elapsed)
        metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=_batch_size(inputs))
        return results


# onnxruntime's messages name its own source files ("/onnxruntime_src/.../reshape_helper.h:47"): no use to a
# client, and a path of the build. Its status prefix ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : ") goes too.
_SOURCE_PATH = re.compile(r"\S*/[\w./+-]+\.(?:h|hpp|hh|c|cc|cpp|cu)(?::\d+)?\s*(?:(?:\w+::)+~?\w+\([^)]*\)\s*)?")
_STATUS_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")


def runtime_message(exc: BaseException, limit: int = 300) -> str:
    """onnxruntime's reason for rejecting an input, without its source paths: what a client may read."""
    text = _STATUS_PREFIX.sub("", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return _SOURCE_PATH.sub("", text).strip()[:limit]


def _batch_size(inputs: Mapping[str, np.ndarray]) -> int:
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


class IntegrityError(Exception):
    """Fetched bytes do not match the sha256 they were pinned to."""


# Files at least this large are fetched as parallel ranged GETs: one S3 stream from Lambda moves
# roughly 50-100 MB/s, so a 40 MB model takes ~0.5 s alone; ranges of 8 MiB overlap their latency.
RANGE_PART_BYTES = PART_BYTES
MAX_PARALLEL_RANGES = MAX_PARALLEL_PARTS


def _error_code(exc: BaseException) -> str:
    """S3's error code from botocore's ClientError or the standard-library reader's S3ReadError."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return str(getattr(exc, "code", ""))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelStore:
    """Owns one function's model: ``manifest()`` and ``get_model()`` load on first use."""

    def __init__(self, settings: Settings, s3_client_factory: Callable[[], Any] = model_s3_client) -> None:
        self.settings = settings
        self._s3_factory = s3_client_factory
        self._s3: Any = None
        self._manifest: Manifest | None = None
        self._model: LoadedModel | None = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._model is not None

    # --- public --------------------------------------------------------------------------------

    def manifest(self) -> Manifest:
        """The verified manifest; fetched once (a small object), without the model."""
        manifest = self._manifest
        if manifest is not None:
            return manifest
        with self._lock:
            if self._manifest is None:
                self._manifest = self._guard("manifest", self._fetch_manifest)
            return self._manifest

    def catalog(self) -> tuple[CatalogEntry, ...] | None:
        """Every model of the API (``CATALOG_KEY``), for the OpenAPI document, read on each call (the
        document is asked for rarely, and a deploy that adds a model rewrites the object in place).
        None where it is not set, or cannot be read or parsed: logged as an error, and the caller
        documents this function's own model instead."""
        key = self.settings.catalog_key
        if key is None:
            return None
        try:
            return decode_catalog(self._get(key))
        except ManifestError as exc:
            logger.error("catalog rejected; documenting this model only", extra={"key": key, "reason": str(exc)})
        except Exception as exc:  # S3 after its retries: AccessDenied, NoSuchKey, unreachable
            reason = f"{type(exc).__name__}: {exc}"[:300]
            logger.error("catalog not read; documenting this model only", extra={"key": key, "reason": reason})
        return None

    def get_model(self) -> LoadedModel:
        """The loaded model; the first caller loads it, concurrent callers wait for that load."""
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is None:
                self._model = self._guard("model", self._load)
            return self._model

    # --- loading -------------------------------------------------------------------------------

    def _guard(self, what: str, load: Callable[[], Any]) -> Any:
        try:
            return load()
        except ModelUnavailable:
            metrics.add_metric(name="ModelLoadFailures", unit=MetricUnit.Count, value=1)
            raise
        except IntegrityError as exc:
            logger.error("integrity check failed", extra={"what": what, "reason": str(exc)})
            metrics.add_metric(name="IntegrityFailures", unit=MetricUnit.Count, value=1)
            metrics.add_metric(name="ModelLoadFailures", unit=MetricUnit.Count, value=1)
            raise ModelUnavailable(f"model {self.settings.model_name!r} is unavailable: {exc}; retry later") from exc
        except ManifestError as exc:
            logger.error("manifest rejected", extra={"reason": str(exc)})
            metrics.add_metric(name="ModelLoadFailures", unit=MetricUnit.Count, value=1)
            raise ModelUnavailable(f"model {self.settings.model_name!r} is unavailable: bad manifest: {exc}") from exc
        except Exception as exc:
            logger.exception("model load failed", extra={"what": what})
            metrics.add_metric(name="ModelLoadFailures", unit=MetricUnit.Count, value=1)
            reason = type(exc).__name__
            raise ModelUnavailable(
                f"model {self.settings.model_name!r} could not be loaded ({reason}); the next request retries"
            ) from exc

    def reset_client(self) -> None:
        """Forget the S3 client; the next fetch creates one (SnapStart restores)."""
        self._s3 = None

    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = self._s3_factory()
        return self._s3

    def _get(self, key: str, version_id: str | None = None) -> bytes:
        if not self.settings.bucket:
            raise ModelUnavailable("MODEL_BUCKET is not set: the function does not know where its model lives")
        params: dict[str, str] = {"Bucket": self.settings.bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id

        def fetch() -> bytes:
            body: bytes = self._client().get_object(**params)["Body"].read()
            return body

        return retries.call(fetch, self._log_retry(key))

    def _log_retry(self, key: str) -> Callable[[int, BaseException, float], None]:
        def log(attempt: int, exc: BaseException, delay: float) -> None:
            logger.warning(
                "S3 read failed, retrying",
                extra={"key": key, "attempt": attempt, "error": type(exc).__name__, "retry_in_s": round(delay, 3)},
            )
            metrics.add_metric(name="S3Retries", unit=MetricUnit.Count, value=1)

        return log

    @tracer.capture_method(capture_response=False)
    def _fetch_manifest(self) -> Manifest:
        pinned = self.settings.manifest_sha256
        if not pinned:
            raise ModelUnavailable(
                "MANIFEST_SHA256 is not set: the function cannot verify its model, so it serves none"
            )
        raw, digest = self._read_manifest()
        if digest != pinned:
            raise IntegrityError(f"manifest sha256 {digest[:12]}… does not match the pinned {pinned[:12]}…")
        manifest = Manifest.loads(raw)
        if manifest.name != self.settings.model_name:
            raise ManifestError(f"manifest names model {manifest.name!r}, function serves {self.settings.model_name!r}")
        logger.append_keys(model=manifest.name, model_version=manifest.version)
        return manifest

    def _read_manifest(self) -> tuple[bytes, str]:
        """The manifest version the deploy pinned. Should that version be gone (an upload run again
        makes the pinned one noncurrent, and the bucket's lifecycle expires noncurrent versions), the
        current one: the sha256 pin still decides whether it is served."""
        key, version = self.settings.manifest_key, self.settings.manifest_version_id
        try:
            return self._read(key, version_id=version)
        except Exception as exc:
            if not version or _error_code(exc) not in ("NoSuchVersion", "InvalidArgument"):
                raise
            logger.warning("pinned manifest version is gone; reading the current one", extra={"version_id": version})
            metrics.add_metric(name="ManifestVersionGone", unit=MetricUnit.Count, value=1)
            return self._read(key)

    def _get_ranges(self, key: str, size: int) -> bytes:
        """``key`` in parallel ranged GETs of ``RANGE_PART_BYTES``, joined in order.

        The size comes from the pinned manifest; the sha256 check after the join catches an
        object that changed between ranges.
        """
        deadline_context = contextvars.copy_context()  # the ranges share the invocation's deadline

        def call(fetch: Callable[[], bytes]) -> bytes:
            return deadline_context.copy().run(retries.call, fetch, self._log_retry(key))

        return read_ranges(self._client(), self.settings.bucket, key, size, RANGE_PART_BYTES, MAX_PARALLEL_RANGES, call)

    def _read(self, key: str, size: int | None = None, version_id: str | None = None) -> tuple[bytes, str]:
        """``key``'s bytes and their sha256: from the download started at init (hashed there, on
        its own thread), else fetched now."""
        prefetched = prefetch.take(key)
        if prefetched is not None:
            return prefetched.data, prefetched.sha256
        if size is not None and size > RANGE_PART_BYTES:
            if not self.settings.bucket:
                raise ModelUnavailable("MODEL_BUCKET is not set: the function does not know where its model lives")
            data = self._get_ranges(key, size)
        else:
            data = self._get(key, version_id)
        return data, _sha256(data)

    def _fetch_file(self, manifest: Manifest, path: str) -> bytes:
        entry = manifest.file(path)
        with tracer.provider.in_subsegment("## fetch") as subsegment:
            subsegment.put_annotation("file", path)
            data, digest = self._read(self.settings.key_for(path), entry.bytes)
        if len(data) != entry.bytes or digest != entry.sha256:
            raise IntegrityError(
                f"{path}: got {len(data)} bytes with sha256 {digest[:12]}…, "
                f"expected {entry.bytes} bytes with sha256 {entry.sha256[:12]}…"
            )
        return data

    def _load(self) -> LoadedModel:
        started = time.perf_counter()
        # onnxruntime is imported on a thread while the bytes arrive:
        # the import is CPU, the fetch mostly waiting on the network. The session's own import
        # below then finds the module ready (or raises its error, if the import failed).
        threading.Thread(target=_import_runtime, name="import-onnxruntime", daemon=True).start()
        manifest = self._manifest or self._fetch_manifest()
        self._manifest = manifest
        files = {f.path: self._fetch_file(manifest, f.path) for f in manifest.files}
        fetched = time.perf_counter()
        with tracer.provider.in_subsegment("## create_session"):
            session = create_session(files[manifest.model_file.path], manifest, self.settings)
        pipeline = build_pipeline(manifest, session, files)
        done = time.perf_counter()
        load_ms = (done - started) * 1000
        metrics.add_metric(name="ModelLoadMs", unit=MetricUnit.Milliseconds, value=load_ms)
        logger.info(
            "model loaded",
            extra={
                "fetch_ms": round((fetched - started) * 1000, 1),
                "session_ms": round((done - fetched) * 1000, 1),
                "bytes": sum(len(b) for b in files.values()),
                "intra_op_threads": self.settings.intra_op_threads,
            },
        )
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

        # Inputs that pass the manifest's checks can still break a graph (a Reshape that needs a
        # multiple of 7, a Gather index out of range): onnxruntime raises these two for that.
        return LoadedModel(manifest=manifest, pipeline=pipeline, load_ms=load_ms, input_errors=(InvalidArgument, Fail))


def _import_runtime() -> None:
    with contextlib.suppress(ImportError):  # reported by the load itself, on the thread that needs it
        import onnxruntime  # noqa: F401


def create_session(model_bytes: bytes, manifest: Manifest, settings: Settings) -> Any:
    """An InferenceSession sized to the function: one intra-op thread per vCPU, no inter-op pool."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # A graph saved pre-optimized at build time needs no second pass at cold start.
    if manifest.onnx.optimization_level:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    else:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])


_store: ModelStore | None = None
_store_lock = threading.Lock()


def get_store() -> ModelStore:
    """The execution environment's model store, created from the environment on first use."""
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                _store = ModelStore(load_settings())
    return _store


def reset_store(store: ModelStore | None = None) -> None:
    """Drop (or replace) the module's store; tests use it to start from a cold environment."""
    global _store
    _store = store

"""``cdk.json`` context -> one frozen, validated configuration.

Every deployed model is a folder in ``model_artifacts/`` with a manifest; ``onnxfn.models.<name>``
overrides the defaults in ``onnxfn.defaults`` for that model. A wrong setting stops synth with one
message that names the key, the value and what is allowed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from contract import big_batch, layout
from contract.environment import API_AUTH_MODES, CONFIG_LOAD_MODES
from contract.limits import INIT_LOAD_MAX_BYTES
from contract.manifest import FileEntry, Manifest, ManifestError
from stacks import config_checks
from stacks.config_checks import _bool, _choice, _int, _known, _number

ConfigError = config_checks.ConfigError  # callers catch it from here

ARCHITECTURES = ("x86_64", "arm64")
PACKAGINGS = ("zip", "image")
RUNTIMES = ("python3.12", "python3.13")
LOAD_MODES = CONFIG_LOAD_MODES  # auto: eager when the artifact fits the init window (ModelConfig.load_mode)
AUTH_MODES = API_AUTH_MODES
# GET /swagger: public (no key, no IAM: the page holds only the API's shape), private (the first
# model's auth), off (no route).
DOCS_MODES = ("public", "private", "off")
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
QUEUE_ARN = re.compile(r"^arn:aws[a-z-]*:sqs:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,80}(\.fifo)?$")
KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]{1,128}$")
ARN_LISTS = {
    "reply_queue_arns": (QUEUE_ARN, "SQS queue ARNs (arn:aws:sqs:<region>:<account>:<name>)"),
    "reply_queue_kms_key_arns": (
        KMS_KEY_ARN,
        "KMS key ARNs (arn:aws:kms:<region>:<account>:key/<key id>), the keys the reply queues are encrypted with",
    ),
}
# Lambda keeps 100 of an account's concurrency unreserved: reserved and provisioned concurrency
# together may use the account's limit less 100 (1,000 by default; new accounts often get 10).
UNRESERVED_MINIMUM = 100
DEFAULT_ACCOUNT_CONCURRENCY = 1000  # Lambda's default quota per Region
# Lambda SnapStart is offered in every commercial Region except these (AWS Lambda developer guide,
# "Improving startup performance with Lambda SnapStart", Supported Regions).
SNAPSTART_UNAVAILABLE_REGIONS = ("ap-southeast-6", "ap-east-2")
SNAPSTART_PARTITION = "aws"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, kw_only=True)
class AlarmThresholds:
    errors: int = 1
    throttles: int = 1
    duration_p99_ratio: float = 0.8
    concurrency_ratio: float = 0.8
    api_5xx: int = 1
    api_4xx_rate: float = 0.05
    api_latency_p99_ms: int = 5000
    dlq_messages: int = 1
    queue_age_s: int = 300
    model_load_failures: int = 1


@dataclass(frozen=True, kw_only=True)
class BigBatchConfig:
    """Batch files too big for one invocation: a Distributed Map over their records (contract/big_batch.py)."""

    enabled: bool = True
    rows: int | None = None  # records from which a file goes there; None: predicted from measured throughput
    bytes: int | None = None  # or bytes, whichever is reached first
    items_per_batch: int = big_batch.DEFAULT_ITEMS_PER_BATCH  # at most; a batch also stops at 240 KiB of items
    max_concurrency: int = big_batch.DEFAULT_MAX_CONCURRENCY  # batches scored at once
    tolerated_failure_percent: float = 0.0  # share of records in failed batches a file may lose before it fails


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    memory_mb: int = 1769
    architecture: str = "x86_64"
    packaging: str = "zip"
    runtime: str = "python3.12"
    timeout_s: int = 30
    load_mode: str = "auto"
    reserved_concurrency: int | None = None
    provisioned_concurrency: int = 0
    snapstart: bool = False
    tracing: bool = False
    auth: str = "api_key"
    canary: bool = False
    log_retention_days: int = 30
    batch_size: int = 10
    max_concurrency: int = 5  # the request queue's event source: worker environments at most
    batch_max_concurrency: int = 5  # the inbox's event source: batch environments at most
    reply_queue_arns: tuple[str, ...] = ()
    reply_queue_kms_key_arns: tuple[str, ...] = ()  # the KMS keys of reply queues encrypted with one
    alarms: AlarmThresholds = field(default_factory=AlarmThresholds)
    big_batch: BigBatchConfig = field(default_factory=BigBatchConfig)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str
    version: str
    artifact_dir: Path
    manifest_sha256: str
    files: tuple[FileEntry, ...]
    settings: ModelSettings
    requirements: tuple[str, ...] = ()  # what the model's pipeline needs beyond the layer (its own layer)
    csv_columns: int | None = None  # a single-input tabular model's row width: its CSV files can be big

    @property
    def prefix(self) -> str:
        """Where the artifact lives: the manifest's sha256 in the path, so a rebuilt artifact never
        overwrites the objects an older function version (canary, rollback) still loads."""
        return layout.model_prefix(self.name, self.version, self.manifest_sha256)

    @property
    def artifact_bytes(self) -> int:
        return sum(entry.bytes for entry in self.files)

    @property
    def load_mode(self) -> str:
        """The API function's LOAD_MODE: eager under SnapStart or provisioned concurrency (init is
        pre-paid; both apply to the API function only) and otherwise as for the others."""
        if self.settings.snapstart or self.settings.provisioned_concurrency:
            return "eager"
        return self.queue_load_mode

    @property
    def queue_load_mode(self) -> str:
        """The batch and worker functions' LOAD_MODE: for ``auto``, eager when the artifact fits the
        init window, otherwise lazy."""
        settings = self.settings
        if settings.load_mode == "auto":
            return "eager" if self.artifact_bytes <= INIT_LOAD_MAX_BYTES else "lazy"
        return settings.load_mode

    @property
    def construct_id(self) -> str:
        return "".join(part.capitalize() for part in re.split(r"[-_]", self.name))


@dataclass(frozen=True, kw_only=True)
class AppConfig:
    project_root: Path
    models: tuple[ModelConfig, ...]
    undeployed: tuple[tuple[str, str], ...] = ()  # (artifact folder, why it is not deployed)
    alarm_email: str | None = None
    docs: str = "public"
    service_name: str = "onnxfn"
    metrics_namespace: str = "onnxfn"
    throttle_rate: float = 50.0
    throttle_burst: int = 100
    account_concurrency: int = DEFAULT_ACCOUNT_CONCURRENCY  # the account's Lambda quota in the deploy Region


def _alarms(key: str, raw: Any, base: AlarmThresholds) -> AlarmThresholds:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: {raw!r} is not allowed; expected an object")
    _known(key, raw, [f.name for f in fields(AlarmThresholds)])
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name.endswith("_ratio") or name == "api_4xx_rate":
            values[name] = _number(f"{key}.{name}", value, 0.01, 1.0)
        else:
            values[name] = _int(f"{key}.{name}", value, 1, 10_000_000)
    return replace(base, **values)


def _big_batch(key: str, raw: Any, base: BigBatchConfig) -> BigBatchConfig:
    if raw is False:
        return replace(base, enabled=False)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: {raw!r} is not allowed; expected an object or false")
    _known(key, raw, [f.name for f in fields(BigBatchConfig)])
    checks: dict[str, Callable[[str, Any], Any]] = {
        "enabled": _bool,
        "rows": lambda k, v: None if v is None else _int(k, v, 1, 10**12),
        "bytes": lambda k, v: None if v is None else _int(k, v, 1, 5 * 1024**4),
        "items_per_batch": lambda k, v: _int(k, v, 1, 100_000_000),
        "max_concurrency": lambda k, v: _int(k, v, 1, 10_000),
        "tolerated_failure_percent": lambda k, v: _number(k, v, 0, 100),
    }
    return replace(base, **{name: checks[name](f"{key}.{name}", value) for name, value in raw.items()})


def _settings(key: str, raw: Any, base: ModelSettings) -> ModelSettings:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: {raw!r} is not allowed; expected an object")
    _known(key, raw, [f.name for f in fields(ModelSettings)])
    values: dict[str, Any] = {}
    checks: dict[str, Callable[[str, Any], Any]] = {
        "memory_mb": lambda k, v: _int(k, v, 128, 10240),
        "architecture": lambda k, v: _choice(k, v, ARCHITECTURES),
        "packaging": lambda k, v: _choice(k, v, PACKAGINGS),
        "runtime": lambda k, v: _choice(k, v, RUNTIMES),
        "timeout_s": lambda k, v: _int(k, v, 1, 900),
        "load_mode": lambda k, v: _choice(k, v, LOAD_MODES),
        "reserved_concurrency": lambda k, v: None if v is None else _int(k, v, 1, 1000),
        "provisioned_concurrency": lambda k, v: _int(k, v, 0, 1000),
        "snapstart": _bool,
        "tracing": _bool,
        "auth": lambda k, v: _choice(k, v, AUTH_MODES),
        "canary": _bool,
        "log_retention_days": lambda k, v: _choice(k, v, LOG_RETENTION_DAYS),
        "batch_size": lambda k, v: _int(k, v, 1, 10),
        "max_concurrency": lambda k, v: _int(k, v, 2, 1000),
        "batch_max_concurrency": lambda k, v: _int(k, v, 2, 1000),
    }
    for name, value in raw.items():
        if name == "alarms":
            values[name] = _alarms(f"{key}.alarms", value, base.alarms)
        elif name == "big_batch":
            values[name] = _big_batch(f"{key}.big_batch", value, base.big_batch)
        elif name in ARN_LISTS:
            pattern, expected = ARN_LISTS[name]
            if not isinstance(value, list) or not all(isinstance(a, str) and pattern.match(a) for a in value):
                raise ConfigError(f"{key}.{name}: {value!r} is not allowed; expected a list of {expected}")
            values[name] = tuple(value)
        else:
            values[name] = checks[name](f"{key}.{name}", value)
    settings = replace(base, **values)
    if settings.snapstart and settings.packaging != "zip":
        raise ConfigError(f"{key}.snapstart: true is not allowed with packaging 'image'; SnapStart needs zip")
    if settings.snapstart and settings.provisioned_concurrency:
        raise ConfigError(f"{key}.snapstart: true is not allowed together with provisioned_concurrency")
    if settings.reserved_concurrency is not None and settings.provisioned_concurrency > settings.reserved_concurrency:
        raise ConfigError(
            f"{key}.provisioned_concurrency: {settings.provisioned_concurrency} is not allowed; "
            f"expected at most reserved_concurrency ({settings.reserved_concurrency})"
        )
    return settings


def _model(root: Path, artifacts: Path, name: str, settings: ModelSettings) -> ModelConfig:
    folder = artifacts / name
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise ConfigError(f"onnxfn.models.{name}: no artifact at {manifest_path}; build it first (make models)")
    raw = manifest_path.read_bytes()
    try:
        manifest = Manifest.loads(raw)  # the same parser the function runs
    except ManifestError as exc:
        raise ConfigError(f"{manifest_path}: not a valid onnxfn manifest ({exc})") from exc
    if manifest.name != name:
        raise ConfigError(f"{manifest_path}: names model {manifest.name!r}, folder is {name!r}")
    files, version = manifest.files, manifest.version
    for entry in files:
        if not (folder / entry.path).exists():
            raise ConfigError(f"{manifest_path}: lists {entry.path!r}, which is missing from {folder}")
    return ModelConfig(
        name=name,
        version=version,
        artifact_dir=folder,
        manifest_sha256=hashlib.sha256(raw).hexdigest(),
        files=files,
        settings=settings,
        requirements=manifest.pipeline.requirements if manifest.pipeline else (),
        csv_columns=_csv_columns(manifest),
    )


def _csv_columns(manifest: Manifest) -> int | None:
    """The width of a CSV row, for a model one CSV row feeds: one numeric input of shape [batch, width]."""
    if len(manifest.inputs) != 1:
        return None
    spec = manifest.inputs[0]
    if spec.datatype == "BYTES" or spec.batch_axis != 0 or len(spec.shape) != 2 or spec.shape[1] <= 0:
        return None
    return spec.shape[1]


def artifact_names(artifacts: Path) -> list[str]:
    """The models in the artifact folder: sub-folders holding a manifest (staging folders start with '.')."""
    return sorted(p.parent.name for p in artifacts.glob("*/manifest.json") if not p.parent.name.startswith("."))


def undeployed(context: Mapping[str, Any] | None, project_root: Path) -> list[tuple[str, str]]:
    """Artifact folders the app leaves out, each with the reason: a model ``onnxfn.models`` does not
    list, or a folder without a manifest."""
    raw = dict(context or {})
    artifacts = project_root / str(raw.get("artifacts_dir", "model_artifacts"))
    listed = raw.get("models")
    left: list[tuple[str, str]] = []
    shown = artifacts.relative_to(project_root) if artifacts.is_relative_to(project_root) else artifacts
    if isinstance(listed, Mapping):
        for name in artifact_names(artifacts):
            if name not in listed:
                how = f'`onnxfn add` registers a model; or add "{name}": {{}}'
                left.append((str(shown / name), f"cdk.json's onnxfn.models does not list it ({how})"))
    for folder in sorted(artifacts.iterdir()) if artifacts.is_dir() else []:
        if folder.is_dir() and not folder.name.startswith(".") and not (folder / "manifest.json").exists():
            left.append((str(shown / folder.name), "it holds no manifest.json (not an artifact `onnxfn add` wrote)"))
    return left


def load_config(context: Mapping[str, Any] | None, project_root: Path) -> AppConfig:
    """Validate the ``onnxfn`` context object and the artifacts it deploys."""
    raw = dict(context or {})
    _known(
        "onnxfn",
        raw,
        [
            "artifacts_dir",
            "models",
            "defaults",
            "alarm_email",
            "docs",
            "service_name",
            "metrics_namespace",
            "throttle_rate",
            "throttle_burst",
            "account_concurrency",
        ],
    )
    artifacts = project_root / str(raw.get("artifacts_dir", "model_artifacts"))
    defaults = _settings("onnxfn.defaults", raw.get("defaults", {}), ModelSettings())
    overrides = raw.get("models")
    if overrides is None:
        overrides = {name: {} for name in artifact_names(artifacts)}
    if not isinstance(overrides, Mapping) or not overrides:
        raise ConfigError(f"onnxfn.models: {overrides!r} is not allowed; expected an object naming at least one model")
    models = tuple(
        _model(project_root, artifacts, name, _settings(f"onnxfn.models.{name}", value or {}, defaults))
        for name, value in sorted(overrides.items())
    )
    account_concurrency = _int(
        "onnxfn.account_concurrency", raw.get("account_concurrency", DEFAULT_ACCOUNT_CONCURRENCY), 10, 1_000_000
    )
    _check_concurrency(models, account_concurrency)
    email = raw.get("alarm_email")
    if email is not None and (not isinstance(email, str) or not EMAIL.match(email)):
        raise ConfigError(f"onnxfn.alarm_email: {email!r} is not allowed; expected an e-mail address or null")
    return AppConfig(
        project_root=project_root,
        models=models,
        undeployed=tuple(undeployed(raw, project_root)),
        alarm_email=email,
        docs=_choice("onnxfn.docs", raw.get("docs", "public"), DOCS_MODES),
        service_name=str(raw.get("service_name", "onnxfn")),
        metrics_namespace=str(raw.get("metrics_namespace", "onnxfn")),
        throttle_rate=_number("onnxfn.throttle_rate", raw.get("throttle_rate", 50.0), 1, 10_000),
        throttle_burst=_int("onnxfn.throttle_burst", raw.get("throttle_burst", 100), 1, 5_000),
        account_concurrency=account_concurrency,
    )


def committed_concurrency(model: ModelConfig) -> int:
    """What the model takes out of the account's pool: its API function's reserved concurrency, or its
    provisioned concurrency where none is reserved (provisioned environments come out of the reserve)."""
    settings = model.settings
    return settings.reserved_concurrency or settings.provisioned_concurrency


def _check_concurrency(models: tuple[ModelConfig, ...], account: int) -> None:
    """Lambda refuses reserved or provisioned concurrency that leaves fewer than 100 unreserved: fail
    at synth with the figures rather than halfway through a deploy."""
    taken = {m.name: committed_concurrency(m) for m in models if committed_concurrency(m)}
    allowed = account - UNRESERVED_MINIMUM
    if taken and sum(taken.values()) > allowed:
        each = ", ".join(f"{name} {count}" for name, count in sorted(taken.items()))
        raise ConfigError(
            f"reserved/provisioned concurrency: {sum(taken.values())} ({each}) is more than the account allows; "
            f"Lambda keeps {UNRESERVED_MINIMUM} of the account's {account} (onnxfn.account_concurrency) unreserved, "
            f"so at most {max(allowed, 0)} can be reserved or provisioned; raise the quota in Service Quotas "
            "(and onnxfn.account_concurrency) or lower the settings"
        )

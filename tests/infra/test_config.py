"""cdk.json context -> config: defaults, overrides, and one clear message for each wrong setting."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from stacks.assets import BudgetExceeded, Layer, check_budget
from stacks.config import ConfigError, load_config
from tests.infra.conftest import ROOT


def test_defaults_and_overrides_from_cdk_json():
    config = load_config(
        {"defaults": {"memory_mb": 2048}, "models": {"digits": {"architecture": "arm64"}, "minilm": None}}, ROOT
    )
    digits, minilm = config.models
    assert (digits.name, digits.settings.architecture, digits.settings.memory_mb) == ("digits", "arm64", 2048)
    assert (minilm.settings.architecture, minilm.settings.packaging, minilm.settings.runtime) == (
        "x86_64",
        "zip",
        "python3.12",
    )
    assert digits.prefix == f"models/digits/1-{digits.manifest_sha256[:12]}/"
    assert len(digits.manifest_sha256) == 64


def test_models_are_discovered_when_not_listed():
    assert [m.name for m in load_config({}, ROOT).models] == ["digits", "minilm"]


@pytest.mark.parametrize(
    ("context", "docs"), [({}, "public"), ({"docs": "private"}, "private"), ({"docs": "off"}, "off")]
)
def test_docs_is_public_unless_set(context, docs):
    assert load_config(context, ROOT).docs == docs


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (
            {"models": {"digits": {"memory_mb": 64}}},
            "onnxfn.models.digits.memory_mb: 64 is not allowed; expected an integer from 128 to 10240",
        ),
        (
            {"models": {"digits": {"architecture": "x86"}}},
            "onnxfn.models.digits.architecture: 'x86' is not allowed; expected one of x86_64, arm64",
        ),
        ({"models": {"digits": {"packaging": "tar"}}}, "packaging: 'tar' is not allowed; expected one of zip, image"),
        (
            {"models": {"digits": {"runtime": "python3.9"}}},
            "runtime: 'python3.9' is not allowed; expected one of python3.12, python3.13",
        ),
        (
            {"models": {"digits": {"load_mode": "sometimes"}}},
            "load_mode: 'sometimes' is not allowed; expected one of auto, lazy, eager",
        ),
        ({"models": {"digits": {"auth": "none"}}}, "auth: 'none' is not allowed; expected one of api_key, iam"),
        (
            {"models": {"digits": {"timeout_s": 901}}},
            "timeout_s: 901 is not allowed; expected an integer from 1 to 900",
        ),
        ({"models": {"digits": {"snapstart": "yes"}}}, "snapstart: 'yes' is not allowed; expected true or false"),
        ({"models": {"digits": {"packaging": "image", "snapstart": True}}}, "SnapStart needs zip"),
        (
            {"models": {"digits": {"reserved_concurrency": 2, "provisioned_concurrency": 3}}},
            "expected at most reserved_concurrency (2)",
        ),
        (
            {"models": {"digits": {"log_retention_days": 10}}},
            "log_retention_days: 10 is not allowed; expected one of 1, 3, 5",
        ),
        ({"models": {"digits": {"alarms": {"errors": 0}}}}, "alarms.errors: 0 is not allowed"),
        ({"models": {"digits": {"colour": "red"}}}, "onnxfn.models.digits.colour: unknown setting"),
        ({"models": {"nosuch": {}}}, "onnxfn.models.nosuch: no artifact at"),
        ({"alarm_email": "not-an-address"}, "onnxfn.alarm_email: 'not-an-address' is not allowed"),
        ({"defaults": {"memory_mb": 99999}}, "onnxfn.defaults.memory_mb: 99999 is not allowed"),
        ({"surprise": 1}, "onnxfn.surprise: unknown setting"),
        ({"docs": "hidden"}, "onnxfn.docs: 'hidden' is not allowed; expected one of public, private, off"),
        ({"docs": None}, "onnxfn.docs: None is not allowed; expected one of public, private, off"),
        ({"models": {"digits": {"reply_queue_arns": ["https://sqs/q"]}}}, "expected a list of SQS queue ARNs"),
    ],
)
def test_wrong_setting_names_key_value_and_allowed(context, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(context, ROOT)


def test_wrong_setting_fails_synth_with_one_line():
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "CDK_CONTEXT_JSON": '{"onnxfn": {"models": {"digits": {"memory_mb": 1}}}}',
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "onnxfn config error: onnxfn.models.digits.memory_mb: 1 is not allowed; expected an integer from 128 to 10240"
    ]


def test_budget_fails_over_250_mb_and_reports_under():
    layer = Layer(path=ROOT, hash="x", bytes=200 * 1024 * 1024, arch="x86_64", python_version="3.12")
    line = check_budget("m", 10 * 1024 * 1024, [layer])
    assert line.startswith("m: 210.0 MB of 250 MB unzipped")
    with pytest.raises(BudgetExceeded, match="over Lambda's limit"):
        check_budget("m", 60 * 1024 * 1024, [layer])


@pytest.mark.parametrize(
    ("settings", "limit", "expected"),
    [
        ({}, None, "eager"),  # auto, and the artifact fits the init window
        ({}, 1000, "lazy"),  # auto, and the artifact is larger than the budget
        ({"load_mode": "lazy"}, None, "lazy"),
        ({"load_mode": "eager"}, 1000, "eager"),
        ({"load_mode": "lazy", "snapstart": True}, 1000, "eager"),  # the snapshot holds the loaded model
        ({"load_mode": "lazy", "provisioned_concurrency": 1}, 1000, "eager"),  # init is pre-paid
    ],
)
def test_load_mode_follows_the_artifact_size_and_the_init_model(settings, limit, expected, monkeypatch):
    import stacks.config

    if limit is not None:
        monkeypatch.setattr(stacks.config, "INIT_LOAD_MAX_BYTES", limit)  # the name the config reads
    (minilm,) = load_config({"models": {"minilm": settings}}, ROOT).models
    assert minilm.artifact_bytes > 1000
    assert minilm.load_mode == expected

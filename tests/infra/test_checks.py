"""cdk-nag (AwsSolutions) and cfn-lint on every synthesized variant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.conftest import ROOT, VARIANTS


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cdk_nag_has_no_unacknowledged_finding_and_every_acknowledgment_has_a_reason(synth, variant):
    s = synth(variant)  # synth itself fails on an unacknowledged finding
    report = json.loads((s.outdir / "validation-report.json").read_text())
    (nag,) = [r for r in report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    assert nag["conclusion"] == "success"
    assert nag["violations"] == []
    assert nag["suppressedViolations"], "the stack has wildcard grants, so some findings must be acknowledged"
    for finding in nag["suppressedViolations"]:
        assert len(finding["reason"]) >= 30, finding["ruleName"]


def test_cdk_nag_is_live_an_unacknowledged_finding_fails_synth(tmp_path):
    """A negative control: the same plugin setup rejects an unencrypted, non-SSL queue."""
    code = """
import aws_cdk as cdk
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks
app = cdk.App(outdir=OUT)
stack = cdk.Stack(app, "Bad")
sqs.Queue(stack, "Plain", encryption=sqs.QueueEncryption.UNENCRYPTED)
cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
app.synth()
""".replace("OUT", repr(str(tmp_path)))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=False, cwd=ROOT
    )
    assert result.returncode != 0
    assert "AwsSolutions-SQS3" in result.stdout + result.stderr


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cfn_lint_is_clean(synth, variant):
    """The app's template and every model's."""
    templates = [str(t) for t in synth(variant).template_files]
    assert len(templates) == 3
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--config-file", str(ROOT / ".cfnlintrc.yaml"), *templates],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""

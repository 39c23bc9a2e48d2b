"""checkov on every synthesized variant: zero failed checks; every skip carries its reason.

checkov runs from its own environment (``.cache/checkov``, made by `make test`): it pins boto3,
botocore and packaging versions that conflict with the project's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.infra.conftest import ROOT, VARIANTS

CHECKOV = ROOT / ".cache" / "checkov" / "bin" / "checkov"


def _checkov(*templates: Path) -> dict:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: `make test` installs checkov into .cache/checkov (make checkov)")
    files = [arg for template in templates for arg in ("-f", str(template))]
    result = subprocess.run(
        [str(CHECKOV), *files, "--framework", "cloudformation", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_checkov_finds_nothing_unacknowledged(synth, variant):
    """The app's template and every model's."""
    files = synth(variant).template_files
    report = _checkov(*files)
    assert report["summary"]["parsing_errors"] == 0
    checked = {Path(c["file_path"]).name for c in report["results"]["passed_checks"]}
    assert checked == {f.name for f in files}
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 100
    skipped = report["results"].get("skipped_checks", [])
    assert skipped, "functions, log groups and queues carry written acknowledgments"
    for check in skipped:
        assert len(check["check_result"]["suppress_comment"]) >= 30, (check["check_id"], check["resource"])


def test_checkov_is_live_without_the_acknowledgments_it_fails(synth, tmp_path):
    """A negative control: the same template with the reasons removed fails the same checks."""
    template = json.loads(synth("default").template_files[1].read_text())
    for resource in template["Resources"].values():
        resource.get("Metadata", {}).pop("checkov", None)
    bare = tmp_path / "bare.template.json"
    bare.write_text(json.dumps(template))
    report = _checkov(bare)
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert {"CKV_AWS_116", "CKV_AWS_117", "CKV_AWS_27", "CKV_AWS_158"} <= failed

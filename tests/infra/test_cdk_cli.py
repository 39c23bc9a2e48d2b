"""`cdk synth` through the pinned CDK CLI: no AWS credentials, no network, zip and image, both architectures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from onnxfn.local.assembly import flatten, nested_templates
from tests.infra.conftest import ROOT

HAS_UNSHARE = shutil.which("unshare") is not None and (
    subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0
)


@pytest.fixture(scope="module")
def layers_built(synth):
    """The layer build needs PyPI; the cached layers make the offline synth below possible."""
    synth("options")  # builds x86_64 and arm64 layers for python3.12


@pytest.mark.parametrize("packaging", ["zip", "image"])
@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
def test_cli_synth_offline_without_credentials(layers_built, tmp_path, packaging, architecture):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "AWS_EC2_METADATA_DISABLED": "true",
        "JSII_RUNTIME_PACKAGE_CACHE_ROOT": str(ROOT / ".cache" / "jsii"),
    }
    assert not any(key.startswith("AWS_ACCESS") or key == "AWS_PROFILE" for key in env)
    command = [
        "npx",
        "--no-install",
        "cdk",
        "synth",
        "--no-notices",
        "-q",
        "-o",
        str(tmp_path / "out"),
        "-c",
        f"onnxfn:packaging={packaging}",
        "-c",
        f"onnxfn:architecture={architecture}",
    ]
    if HAS_UNSHARE:
        command = ["unshare", "-n", *command]  # a network namespace with no interfaces up: truly offline
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    own = json.loads((out / "Onnxfn.template.json").read_text())
    assert len(nested_templates(own, out)) == 2  # named by the asset metadata the CLI writes
    template = flatten(own, out)
    functions = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Description", "").startswith("onnxfn ")
    ]
    assert len(functions) == 6
    assert all(f["Architectures"] == [architecture] for f in functions)
    if packaging == "image":
        assert all(f["PackageType"] == "Image" for f in functions)
    else:
        assert all(f["Runtime"] == "python3.12" and len(f["Layers"]) == 1 for f in functions)
        assert f"onnxfn budget digits ({architecture}, python3.12)" in result.stderr
    assert (tmp_path / "out" / "manifest.json").exists()

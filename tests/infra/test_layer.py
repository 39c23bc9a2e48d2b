"""The dependency layer imports and serves on its own.

The layer is built (or taken from its cache) through ``layers/build.py`` exactly as the stack runs
it: by path, in a subprocess, reading the JSON on stdout's last line. It is then loaded by a Python
with no site-packages and no environment, whose path holds only the layer, a copy of ``handlers/``
(as the function asset holds it) and the standard library, and it serves a real inference request
against the digits artifact in a moto S3 server.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer
from sklearn.datasets import load_digits

from onnxfn.local.events import api_gateway_event
from onnxfn.local.upload import upload_artifact
from tests.reference import digits_direct

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "layers" / "build.py"
DIGITS = ROOT / "model_artifacts" / "digits"
ZIP_LIMIT = 250 * 1024 * 1024  # Lambda: function code + layers, unzipped
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
ARCH = "x86_64" if platform.machine().lower() in ("x86_64", "amd64") else "arm64"
JSON_FIELDS = {"path", "arch", "python_version", "bytes", "files", "cached", "hash", "bytes_before_strip"}
STRIPPED_ORT = ("tools", "transformers", "quantization", "backend")
LAYER_PACKAGES = ("onnxruntime", "numpy", "tokenizers", "pydantic", "boto3", "botocore", "aws_lambda_powertools")

# Runs under `python -S -E -P -B`: no site-packages, no PYTHON* variables, no script dir or cwd on the
# path, no bytecode written into the cached layer. Everything it knows comes in argv[1].
SERVE = r"""
import json, os, sys, sysconfig

config = json.loads(sys.argv[1])
sys.path[:0] = [config["function"], config["layer"]]  # Lambda's order: /var/task, then /opt/python
os.environ.update(config["environment"])


class Context:
    function_name = "onnxfn-digits"
    memory_limit_in_mb = 1769
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:onnxfn-digits"
    aws_request_id = "layer-test-request"


for name in config["packages"]:
    __import__(name)
from handlers import api

response = api.lambda_handler(config["event"], Context())
import boto3  # the queue worker's client: its service model survives the layer's botocore pruning
boto3.client("sqs", region_name="us-east-1")
modules = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}
report = {
    "response": response,
    "modules": modules,
    "sys_path": sys.path,
    "stdlib": [sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")],
}
with open(config["report"], "w") as out:
    json.dump(report, out)
"""


def run_build(*args: str) -> subprocess.CompletedProcess[str]:
    """``layers/build.py`` as the stack runs it: by path, in a subprocess, from the repository root."""
    return subprocess.run(
        [sys.executable, str(BUILD), *args], cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False
    )


def last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, f"layers/build.py exited {result.returncode}:\n{result.stderr[-3000:]}"
    document: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return document


@pytest.fixture(scope="module")
def layer() -> dict[str, Any]:
    """The layer for this interpreter's Python version and this machine's architecture."""
    return last_json(run_build("--python-version", PYTHON, "--arch", ARCH, "--print-json"))


@pytest.fixture(scope="module")
def function_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of handlers/ as the zip function's asset holds it (no bytecode caches)."""
    root = tmp_path_factory.mktemp("function")
    shutil.copytree(ROOT / "handlers", root / "handlers", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_cli_prints_the_layer_and_reuses_its_cache(layer: dict[str, Any]) -> None:
    assert JSON_FIELDS.issubset(layer)
    root = Path(layer["path"])
    assert (root / "python").is_dir(), "path must be the folder that contains python/ (Code.from_asset)"
    assert (layer["arch"], layer["python_version"]) == (ARCH, PYTHON)
    assert root.name == f"{ARCH}-py{PYTHON}-{layer['hash']}"
    assert layer["files"] > 0 and 0 < layer["bytes"] < layer["bytes_before_strip"]

    again = last_json(run_build("--python-version", PYTHON, "--arch", ARCH, "--print-json"))
    assert again["cached"] is True
    assert {k: again[k] for k in ("path", "hash", "bytes", "files")} == {
        k: layer[k] for k in ("path", "hash", "bytes", "files")
    }


def test_layer_is_stripped_of_what_never_runs(layer: dict[str, Any]) -> None:
    python = Path(layer["path"]) / "python"
    leftovers = []
    for dirpath, dirnames, filenames in os.walk(python):
        here = Path(dirpath)
        leftovers += [here / d for d in dirnames if d == "__pycache__"]
        leftovers += [here / d for d in dirnames if d in ("tests", "test") and any((here / d).rglob("*.py"))]
        leftovers += [here / f for f in filenames if f.endswith((".pyc", ".pyo", ".pyi"))]
    assert leftovers == [], f"left in the layer: {[str(p.relative_to(python)) for p in leftovers[:10]]}"
    assert not [name for name in STRIPPED_ORT if (python / "onnxruntime" / name).exists()]
    assert not (python / "bin").exists()
    # The C API library, the hub client and the service models no function calls are gone.
    assert not list((python / "onnxruntime" / "capi").glob("libonnxruntime.so*"))
    assert not (python / "huggingface_hub").exists() and not (python / "hf_xet").exists()
    assert sorted(p.name for p in (python / "botocore" / "data").iterdir() if p.is_dir()) == ["s3", "sqs", "sts"]
    # Kept: package metadata (onnxruntime reads its own version from it).
    assert (python / "onnxruntime-1.31.1.dist-info" / "METADATA").is_file()
    assert list(python.glob("numpy-*.dist-info/METADATA"))


def test_layer_and_handlers_fit_lambdas_zip_limit(layer: dict[str, Any], function_root: Path) -> None:
    handlers = last_json(run_build("--measure", str(function_root), "--print-json"))
    assert handlers["bytes"] > 0
    assert layer["bytes"] < ZIP_LIMIT - handlers["bytes"], (
        f"layer {layer['bytes'] / 2**20:.1f} MB + handlers {handlers['bytes'] / 2**20:.2f} MB exceed 250 MB"
    )
    # --measure counts what the layer build reports.
    assert int(run_build("--measure", layer["path"]).stdout.strip()) == layer["bytes"]


def test_layer_alone_imports_and_serves_digits(
    layer: dict[str, Any], function_root: Path, moto_endpoint: str, tmp_path: Path
) -> None:
    if not (DIGITS / "manifest.json").is_file():
        pytest.fail(f"{DIGITS} is not built; run `make models`")
    s3 = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="onnxfn-layer-test")
    environment = upload_artifact(s3, "onnxfn-layer-test", DIGITS)
    environment.update(
        {
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            # No AWS config or credentials file of this machine is read.
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    pixels = load_digits().data[7:8].astype(np.float32)
    body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels.tolist()}]}
    event = api_gateway_event("POST", "/v2/models/digits/infer", json.dumps(body), {"Content-Type": "application/json"})
    layer_python = str(Path(layer["path"]) / "python")
    config = {
        "layer": layer_python,
        "function": str(function_root),
        "environment": environment,
        "event": event,
        "packages": LAYER_PACKAGES,
        "report": str(tmp_path / "report.json"),
    }
    result = subprocess.run(
        [sys.executable, "-S", "-E", "-P", "-B", "-c", SERVE, json.dumps(config)],
        cwd=tmp_path,
        env={},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"the layer did not serve:\n{result.stderr[-3000:]}"
    report = json.loads((tmp_path / "report.json").read_text())

    response = report["response"]
    assert response["statusCode"] == 200, response.get("body")
    outputs = {o["name"]: o for o in json.loads(response["body"])["outputs"]}
    label, probabilities = digits_direct(DIGITS, pixels)
    assert outputs["label"]["data"] == label.tolist()
    np.testing.assert_allclose(outputs["probabilities"]["data"], probabilities.reshape(-1), rtol=1e-5, atol=1e-6)

    # Nothing came from outside the layer, the function's code and the standard library.
    assert not [p for p in report["sys_path"] if "site-packages" in p]
    roots = tuple(os.path.join(os.path.realpath(r), "") for r in [layer_python, function_root, *report["stdlib"]])
    files = {name: os.path.realpath(f) for name, f in report["modules"].items() if f}
    outside = sorted(f"{name}: {f}" for name, f in files.items() if not f.startswith(roots))
    assert outside == [], f"imported from outside the layer, handlers and stdlib: {outside[:10]}"
    layer_root = os.path.join(os.path.realpath(layer_python), "")
    for package in LAYER_PACKAGES:
        assert files[package].startswith(layer_root), f"{package} came from {files[package]}"
    assert files["handlers.api"].startswith(os.path.join(os.path.realpath(function_root), ""))
    assert "onnxruntime.capi.onnxruntime_pybind11_state" in files, "the model was never run"


@pytest.mark.parametrize(
    ("flag", "value", "allowed"),
    [("--arch", "aarch64", "x86_64, arm64"), ("--python-version", "3.9", "3.11, 3.12, 3.13, 3.14")],
)
def test_bad_flag_is_one_line_naming_it(flag: str, value: str, allowed: str) -> None:
    args = {"--arch": ARCH, "--python-version": PYTHON, flag: value}
    result = run_build(*[item for pair in args.items() for item in pair], "--print-json")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and allowed in lines[0] and repr(value) in lines[0]


def test_pip_failure_exits_1_with_pips_words(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("this is not a requirement ===\n")  # pip rejects it before any download
    result = run_build(
        "--python-version", PYTHON, "--arch", ARCH, "--requirements", str(requirements),
        "--cache-dir", str(tmp_path / "cache"), "--print-json",
    )  # fmt: skip
    assert result.returncode == 1
    assert "pip install" in result.stderr and "requirement" in result.stderr.lower()
    assert not [p for p in (tmp_path / "cache").iterdir()], "a failed build leaves nothing in the cache"

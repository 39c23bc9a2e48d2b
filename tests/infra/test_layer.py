"""Every deployable dependency layer imports and serves on its own, in its runtime's interpreter.

The stack deploys layers for python3.12 and python3.13 on x86_64 and arm64; these tests build the
layers of (x86_64, 3.12), (x86_64, 3.13) and (arm64, 3.13) through ``layers/build.py`` exactly as
the stack runs it (by path, in a subprocess, JSON on stdout's last line), then load each one as
Lambda does: the runtime's own interpreter (``-I -S -B``: no environment, no site-packages, no
bytecode written), ``sys.path`` = a copy of ``handlers/`` then the layer's folders in Lambda's order
(:func:`onnxfn.local.runtime.layer_paths`), then the standard library. Each serves one inference per
demo model through ``handlers.api.lambda_handler``, against the artifacts in a moto S3 server.

x86_64 layers run under pyenv's CPython 3.12 / 3.13 (found by ``layers/interpreters.py``). The
arm64 layer runs under qemu-user with Debian trixie's aarch64 CPython 3.13, from the sysroot that
``layers/arm64_sysroot.py`` prepares (``make arm64-sysroot``). Nothing run under qemu is timed: it
is emulated.

One file past 400 lines on purpose: the layers are built and cached once per session for all
its tests, which share the fixtures that run an interpreter on a layer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer
from sklearn.datasets import load_digits

from onnxfn.local.events import api_gateway_event
from onnxfn.local.runtime import HOST_ARCH, interpreters, layer_paths
from onnxfn.local.upload import upload_artifact
from tests.reference import digits_direct, minilm_direct

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "layers" / "build.py"
SYSROOT = ROOT / "layers" / "arm64_sysroot.py"
ARTIFACTS = ROOT / "model_artifacts"
MINILM_REFERENCE = ROOT / "tests" / "fixtures" / "minilm_reference.npz"
BUCKET = "onnxfn-layer-test"
ZIP_LIMIT = 250 * 1024 * 1024  # Lambda: function code + layers, unzipped
JSON_FIELDS = {"path", "arch", "python_version", "bytes", "files", "cached", "hash", "bytes_before_strip", "bytecode"}
STRIPPED_ORT = ("tools", "transformers", "quantization", "backend")
LAYER_PACKAGES = ("onnxruntime", "numpy", "tokenizers", "pydantic", "boto3", "botocore", "aws_lambda_powertools")
MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}  # Lambda's architecture → platform.machine()
# Sentences of the reference fixture, of different lengths: the batch is padded.
MINILM_SENTENCES = ["The cat sat on the mat.", "How do I reset my password?", "This movie was good."]
DIGITS_ROW = 7


@dataclass(frozen=True)
class Target:
    """A layer the stack deploys: Lambda architecture and Python runtime version."""

    arch: str
    version: str

    def __str__(self) -> str:
        return f"{self.arch}-py{self.version}"

    @property
    def emulated(self) -> bool:
        return self.arch != HOST_ARCH

    @property
    def cache_tag(self) -> str:
        return "cpython-" + self.version.replace(".", "")


TARGETS = [Target("x86_64", "3.12"), Target("x86_64", "3.13"), Target("arm64", "3.13")]
MODELS = ["digits", "minilm"]

# Runs in the runtime's interpreter with -I -S -B; everything it knows comes in argv[1] and the
# environment (set before the interpreter starts, as Lambda sets the function's).
SERVE = r"""
import importlib.util, json, os, platform, sys, sysconfig

config = json.loads(sys.argv[1])
sys.path[:0] = config["sys_path"]  # Lambda's order: /var/task, then the layer's folders


class Context:
    function_name = "onnxfn-layer-test"
    memory_limit_in_mb = 1769
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:onnxfn-layer-test"
    aws_request_id = "layer-test-request"


for name in config["packages"]:
    __import__(name)
from handlers import api

response = api.lambda_handler(config["event"], Context())
import boto3  # the queue worker's client: its service model survives the layer's botocore pruning
boto3.client("sqs", region_name="us-east-1")


def folder(path):
    return os.path.join(os.path.realpath(path), "")


files = {name: os.path.realpath(m.__file__) for name, m in list(sys.modules.items()) if getattr(m, "__file__", None)}
layer = folder(config["layer"])
# Bytecode the interpreter would read for each module it imported from the layer (-B writes none).
checked, missing, foreign = 0, [], []
for name, path in sorted(files.items()):
    if path.startswith(layer) and path.endswith(".py"):
        checked += 1
        try:
            with open(importlib.util.cache_from_source(path), "rb") as pyc:
                magic = pyc.read(4)
        except OSError:
            missing.append(name)
            continue
        if magic != importlib.util.MAGIC_NUMBER:
            foreign.append(name)
report = {
    "response": response,
    "files": files,
    "sys_path": sys.path,
    "sys_path_given": config["sys_path"],
    "roots": {
        "layer": layer,
        "function": folder(config["function"]),
        "stdlib": sorted({folder(sysconfig.get_path("stdlib")), folder(sysconfig.get_path("platstdlib"))}),
    },
    "machine": platform.machine(),
    "version": "%d.%d.%d" % sys.version_info[:3],
    "bytecode": {"checked": checked, "missing": missing, "foreign": foreign},
}
with open(config["report"], "w") as out:
    json.dump(report, out)
"""


def run_build(*args: str) -> subprocess.CompletedProcess[str]:
    """``layers/build.py`` as the stack runs it: by path, in a subprocess, from the repository root."""
    return subprocess.run(
        [sys.executable, str(BUILD), *args], cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False
    )


def last_json(result: subprocess.CompletedProcess[str], what: str = "layers/build.py") -> dict[str, Any]:
    assert result.returncode == 0, f"{what} exited {result.returncode}:\n{result.stderr[-3000:]}"
    document: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return document


def runtime_command(target: Target) -> list[str]:
    """The interpreter of the target's runtime: native, or aarch64 under qemu-user on an x86_64 machine."""
    if not target.emulated:
        finder = interpreters()
        try:
            return [finder.find(target.version).path]
        except finder.InterpreterNotFound as exc:
            pytest.fail(f"the {target} layer must run in Python {target.version}: {exc}")
    if target.arch != "arm64":
        pytest.fail(f"an {target.arch} layer cannot run on this {HOST_ARCH} machine (only arm64 is emulated)")
    result = subprocess.run(
        [sys.executable, str(SYSROOT), "--print-json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"the arm64 layer runs under qemu-user in an arm64 Debian sysroot, which could not be prepared "
            f"(`make arm64-sysroot` as root installs qemu-user-static and debootstrap and prepares it):\n"
            f"{result.stderr[-3000:]}"
        )
    sysroot = last_json(result, "layers/arm64_sysroot.py")
    assert sysroot["version"].startswith(f"{target.version}."), sysroot
    command: list[str] = sysroot["command"]
    return command


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=TARGETS, ids=str)
def target(request: pytest.FixtureRequest) -> Target:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def layer(target: Target) -> dict[str, Any]:
    """The target's layer, built (or taken from the cache) by ``layers/build.py``."""
    return last_json(run_build("--python-version", target.version, "--arch", target.arch, "--print-json"))


@pytest.fixture(scope="module")
def function_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the function's packages as the zip function's asset holds them (no bytecode caches)."""
    from stacks.assets import FUNCTION_PACKAGES

    root = tmp_path_factory.mktemp("function")
    for name in FUNCTION_PACKAGES:
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def artifacts(moto_endpoint: str) -> dict[str, dict[str, str]]:
    """Both demo models uploaded as a deploy does; each model's function environment."""
    s3 = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=BUCKET)
    environments = {}
    for model in MODELS:
        if not (ARTIFACTS / model / "manifest.json").is_file():
            pytest.fail(f"{ARTIFACTS / model} is not built; run `make models`")
        environments[model] = upload_artifact(s3, BUCKET, ARTIFACTS / model)
    return environments


def request_body(model: str) -> dict[str, Any]:
    """The OIP request of one inference of a demo model."""
    if model == "digits":
        pixels = load_digits().data[DIGITS_ROW : DIGITS_ROW + 1]
        return {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels.tolist()}]}
    sentences = MINILM_SENTENCES
    return {"inputs": [{"name": "text", "shape": [len(sentences)], "datatype": "BYTES", "data": sentences}]}


@pytest.fixture(scope="module", params=MODELS)
def served(
    request: pytest.FixtureRequest,
    target: Target,
    layer: dict[str, Any],
    function_root: Path,
    moto_endpoint: str,
    artifacts: dict[str, dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """One inference through ``handlers.api.lambda_handler`` in a process that has only the layer."""
    model: str = request.param
    work = tmp_path_factory.mktemp(f"serve-{target}-{model}")
    environment = {
        **artifacts[model],
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        # No AWS config or credentials file of this machine is read.
        "AWS_CONFIG_FILE": str(work / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    body = request_body(model)
    event = api_gateway_event(
        "POST", f"/v2/models/{model}/infer", json.dumps(body), {"Content-Type": "application/json"}
    )
    layer_python = Path(layer["path"]) / "python"
    config = {
        "sys_path": [str(function_root), *layer_paths(Path(layer["path"]), target.version)],
        "layer": str(layer_python),
        "function": str(function_root),
        "event": event,
        "packages": LAYER_PACKAGES,
        "report": str(work / "report.json"),
    }
    # -I: no PYTHON* variables, user site or script folder; -S: no site-packages; -B: no bytecode written.
    command = [*runtime_command(target), "-I", "-S", "-B", "-c", SERVE, json.dumps(config)]
    result = subprocess.run(
        command, cwd=work, env=environment, capture_output=True, text=True, timeout=1500, check=False
    )
    assert result.returncode == 0, f"the {target} layer did not serve {model}:\n{result.stderr[-3000:]}"
    report: dict[str, Any] = json.loads((work / "report.json").read_text())
    report["model"], report["body"] = model, body
    return report


# --- the build ------------------------------------------------------------------------------------


def test_cli_prints_the_layer_and_reuses_its_cache(target: Target, layer: dict[str, Any]) -> None:
    assert JSON_FIELDS.issubset(layer)
    root = Path(layer["path"])
    assert (root / "python").is_dir(), "path must be the folder that contains python/ (Code.from_asset)"
    assert (layer["arch"], layer["python_version"]) == (target.arch, target.version)
    assert root.name == f"{target}-{layer['hash']}"
    assert layer["files"] > 0 and 0 < layer["bytes"] < layer["bytes_before_strip"]
    assert layer["lambda_compatible"] is True, f"needs glibc {layer['requires_glibc']}"
    assert (layer["bytecode"] or "").startswith(f"{target.version}."), "compiled by the runtime's own Python"

    again = last_json(run_build("--python-version", target.version, "--arch", target.arch, "--print-json"))
    assert again["cached"] is True
    assert {k: again[k] for k in ("path", "hash", "bytes", "files")} == {
        k: layer[k] for k in ("path", "hash", "bytes", "files")
    }


def test_layer_is_stripped_of_what_never_runs(layer: dict[str, Any]) -> None:
    python = Path(layer["path"]) / "python"
    leftovers = []
    for dirpath, dirnames, filenames in os.walk(python):
        here = Path(dirpath)
        leftovers += [here / d for d in dirnames if d in ("tests", "test") and any((here / d).rglob("*.py"))]
        leftovers += [here / f for f in filenames if f.endswith((".pyo", ".pyi"))]
    assert leftovers == [], f"left in the layer: {[str(p.relative_to(python)) for p in leftovers[:10]]}"
    assert not [name for name in STRIPPED_ORT if (python / "onnxruntime" / name).exists()]
    assert not (python / "bin").exists()
    # The C API library, the hub client and the service models no function calls are gone.
    assert not list((python / "onnxruntime" / "capi").glob("libonnxruntime.so*"))
    assert not (python / "huggingface_hub").exists() and not (python / "hf_xet").exists()
    assert sorted(p.name for p in (python / "botocore" / "data").iterdir() if p.is_dir()) == [
        "s3",
        "sqs",
        "stepfunctions",
        "sts",
    ]
    # Kept: package metadata (onnxruntime reads its own version from it).
    assert (python / "onnxruntime-1.31.1.dist-info" / "METADATA").is_file()
    assert list(python.glob("numpy-*.dist-info/METADATA"))


def test_layer_bytecode_is_the_runtimes_own(target: Target, layer: dict[str, Any]) -> None:
    """Only the target version's bytecode, beside (nearly) every source, used without checking timestamps."""
    python = Path(layer["path"]) / "python"
    sources = list(python.rglob("*.py"))
    compiled = list(python.rglob("*.pyc"))
    wrong = [p for p in compiled if p.parent.name != "__pycache__" or not p.name.endswith(f".{target.cache_tag}.pyc")]
    assert wrong == [], f"bytecode not of {target.cache_tag}: {[str(p.relative_to(python)) for p in wrong[:10]]}"
    uncompiled = [p for p in sources if not (p.parent / "__pycache__" / f"{p.stem}.{target.cache_tag}.pyc").is_file()]
    # A few files of the wheels may not compile for the target (compileall skips them); a handful at most.
    assert len(uncompiled) <= 5, [str(p.relative_to(python)) for p in uncompiled[:10]]
    # PEP 552 flags: 0b01 = hash-based, source not checked (Lambda's /opt keeps no usable timestamps).
    flags = {int.from_bytes(p.read_bytes()[4:8], "little") for p in compiled[:200]}
    assert flags == {0b01}


def test_layer_and_handlers_fit_lambdas_zip_limit(layer: dict[str, Any], function_root: Path) -> None:
    handlers = last_json(run_build("--measure", str(function_root), "--print-json"))
    assert handlers["bytes"] > 0
    assert layer["bytes"] < ZIP_LIMIT - handlers["bytes"], (
        f"layer {layer['bytes'] / 2**20:.1f} MB + handlers {handlers['bytes'] / 2**20:.2f} MB exceed 250 MB"
    )
    # --measure counts what the layer build reports.
    assert int(run_build("--measure", layer["path"]).stdout.strip()) == layer["bytes"]


# --- the layer serves -----------------------------------------------------------------------------


def test_layer_alone_serves_each_demo_model(target: Target, served: dict[str, Any]) -> None:
    assert served["machine"] == MACHINES[target.arch]
    assert served["version"].startswith(f"{target.version}.")
    response = served["response"]
    assert response["statusCode"] == 200, response.get("body")
    outputs = {o["name"]: o for o in json.loads(response["body"])["outputs"]}
    model_input = served["body"]["inputs"][0]
    if served["model"] == "digits":
        pixels = np.asarray(model_input["data"], dtype=np.float32)
        label, probabilities = digits_direct(ARTIFACTS / "digits", pixels)
        assert outputs["label"]["data"] == label.tolist() == [load_digits().target[DIGITS_ROW]]
        got = np.asarray(outputs["probabilities"]["data"], dtype=np.float32)
        np.testing.assert_allclose(got, probabilities.reshape(-1), rtol=1e-4, atol=1e-5)
    else:
        sentences: list[str] = model_input["data"]
        embedding = outputs["embedding"]
        assert embedding["shape"] == [len(sentences), 384]
        got = np.asarray(embedding["data"], dtype=np.float32).reshape(embedding["shape"])
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
        reference = np.load(MINILM_REFERENCE, allow_pickle=False)
        index = [[str(s) for s in reference["sentences"]].index(s) for s in sentences]
        # Against the original PyTorch model (the quantized model's own accuracy) ...
        cosine = np.sum(got * reference["embeddings"][index].astype(np.float32), axis=1)
        cosine /= np.linalg.norm(reference["embeddings"][index], axis=1)
        assert cosine.min() >= 0.98, f"cosine to sentence-transformers {cosine.round(4).tolist()}"
        # ... and against the same model run by the dev venv's onnxruntime: the layer changes nothing.
        # On arm64, MatMulNBits quantizes each block of activations with that architecture's own int8
        # kernels, whose rounding differs from x86's (measured under qemu: 0.9983 at worst).
        direct = np.sum(got * minilm_direct(ARTIFACTS / "minilm", sentences), axis=1)
        floor = 0.999 if target.arch == "x86_64" else 0.995
        assert direct.min() >= floor, f"cosine to the direct session {direct.round(5).tolist()}"

    # Nothing came from outside the layer, the function's code and the standard library.
    given = served["sys_path_given"]
    assert served["sys_path"][: len(given)] == given
    assert not [p for p in served["sys_path"][len(given) :] if p.endswith(("site-packages", "dist-packages"))]
    roots = served["roots"]
    files: dict[str, str] = served["files"]
    allowed = (roots["layer"], roots["function"], *roots["stdlib"])
    outside = sorted(f"{name}: {f}" for name, f in files.items() if not f.startswith(allowed))
    assert outside == [], f"imported from outside the layer, handlers and stdlib: {outside[:10]}"
    for package in LAYER_PACKAGES:
        assert files[package].startswith(roots["layer"]), f"{package} came from {files[package]}"
    assert files["handlers.api"].startswith(roots["function"])
    assert files["contract.environment"].startswith(roots["function"])  # the contract ships with the handlers
    assert "onnxruntime.capi.onnxruntime_pybind11_state" in files, "the model was never run"
    # What the function imported from the layer has bytecode this interpreter reads.
    bytecode = served["bytecode"]
    assert bytecode["checked"] > 100 and (bytecode["missing"], bytecode["foreign"]) == ([], []), bytecode


# --- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "allowed"),
    [("--arch", "aarch64", "x86_64, arm64"), ("--python-version", "3.9", "3.11, 3.12, 3.13, 3.14")],
)
def test_bad_flag_is_one_line_naming_it(flag: str, value: str, allowed: str) -> None:
    args = {"--arch": "x86_64", "--python-version": "3.12", flag: value}
    result = run_build(*[item for pair in args.items() for item in pair], "--print-json")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and allowed in lines[0] and repr(value) in lines[0]


def test_pip_failure_exits_1_with_pips_words(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("this is not a requirement ===\n")  # pip rejects it before any download
    result = run_build(
        "--python-version", "3.12", "--arch", "x86_64", "--requirements", str(requirements),
        "--cache-dir", str(tmp_path / "cache"), "--print-json",
    )  # fmt: skip
    assert result.returncode == 1
    assert "pip install" in result.stderr and "requirement" in result.stderr.lower()
    assert not [p for p in (tmp_path / "cache").iterdir()], "a failed build leaves nothing in the cache"

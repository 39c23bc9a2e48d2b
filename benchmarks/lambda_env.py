"""A Lambda-like place to measure in: a local S3 (moto server), the function's environment, one vCPU.

- S3: ``ThreadedMotoServer`` on 127.0.0.1 in the bench process; artifacts uploaded with
  ``onnxfn.local.upload.upload_artifact`` as a deploy does.
- Environment: what the stack gives the function (``stacks/onnxfn_stack.py``: tracing off by
  default, log level INFO), fake credentials, ``AWS_ENDPOINT_URL`` to the local S3,
  ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1769``; never a developer's AWS config or credentials.
- CPU: Lambda gives 1 vCPU at 1,769 MB. Function processes are pinned to one core of this 2-core
  machine and the local S3 to the other, so the server's work is not the function's (in AWS, S3 runs
  elsewhere).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.timing import ROOT

ARTIFACTS = ROOT / "model_artifacts"
PEERS = ROOT / "benchmarks" / "peers"
BUCKET = "onnxfn-bench-models"
MEMORY_MB = 1769
REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# What the stack sets for every function (stacks/onnxfn_stack.py, tracing off by default).
FUNCTION_DEFAULTS = {
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "onnxfn",
    "LOAD_MODE": "lazy",
}
RESULT_PREFIX = "BENCH-RESULT "


def cores() -> tuple[int | None, int | None]:
    """(function core, server core): the last allowed core for the function, the first for S3."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[-1], allowed[0]


def pin(core: int | None) -> None:
    """Pin the calling thread (and the threads it starts from now on) to ``core``."""
    if core is not None:
        os.sched_setaffinity(0, {core})


def host_environment() -> dict[str, str]:
    """This machine's environment without anything AWS or Powertools (the function gets its own)."""
    drop = ("AWS_", "POWERTOOLS_", "BOTO", "PYTHONPATH", "MODEL_", "MANIFEST_", "ORT_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def aws_environment(endpoint: str | None) -> dict[str, str]:
    env = {
        **FAKE_CREDENTIALS,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def function_environment(
    model: str, model_env: dict[str, str], endpoint: str | None, memory_mb: int = MEMORY_MB
) -> dict[str, str]:
    """The environment a deployed onnxfn function of ``model`` has, pointed at the local S3."""
    return {
        **host_environment(),
        **aws_environment(endpoint),
        **FUNCTION_DEFAULTS,
        "POWERTOOLS_SERVICE_NAME": f"onnxfn-{model}",
        "AWS_LAMBDA_FUNCTION_NAME": f"onnxfn-bench-{model}",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        **model_env,
    }


def reported_environment(env: dict[str, str]) -> dict[str, str]:
    """The function variables a report shows (credentials masked, host variables left out)."""
    keep = ("AWS_", "POWERTOOLS_", "LOAD_MODE", "MODEL_", "MANIFEST_", "TUTORIAL_", "PYTHON")
    shown = {k: v for k, v in env.items() if k.startswith(keep) and k != "PYTHONPATH"}
    for key in FAKE_CREDENTIALS:
        if key in shown:
            shown[key] = "testing (fake)"
    return dict(sorted(shown.items()))


def manifest_files(model: str) -> dict[str, str]:
    """Role → file name of the artifact's files (``model``, ``tokenizer``), from its manifest."""
    manifest = json.loads((ARTIFACTS / model / "manifest.json").read_text())
    return {entry["role"]: entry["path"] for entry in manifest["files"]}


def task_root(kind: str, into: Path) -> Path:
    """The code a function is deployed with, without bytecode: Lambda's ``LAMBDA_TASK_ROOT``.

    ``onnxfn``: ``handlers/`` as the stack stages it (``stacks/assets.py``); ``peers``: the tutorial
    handler and the floor. Processes run with ``PYTHONDONTWRITEBYTECODE=1`` (Lambda's code and layer
    directories are read-only), so this code compiles at every start, as in Lambda, whatever
    ``__pycache__`` the working tree holds.
    """
    import shutil

    target = into / f"task-{kind}"
    if not target.exists():
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        if kind == "onnxfn":
            shutil.copytree(ROOT / "handlers", target / "handlers", ignore=ignore)
        else:
            target.mkdir(parents=True)
            for name in ("tutorial_handler.py", "bare.py"):
                shutil.copyfile(PEERS / name, target / name)
    return target


@dataclass
class LocalS3:
    endpoint: str
    client: Any
    bucket: str

    def upload(self, model: str) -> dict[str, str]:
        """Upload ``model_artifacts/<model>`` as a deploy does; return the function's model variables."""
        from onnxfn.local.upload import upload_artifact

        return upload_artifact(self.client, self.bucket, ARTIFACTS / model)

    def tutorial_environment(self, model: str, model_env: dict[str, str]) -> dict[str, str]:
        """Where the tutorial handler finds the same objects onnxfn serves (bucket and keys)."""
        prefix = model_env["MODEL_PREFIX"]
        files = manifest_files(model)
        env = {"TUTORIAL_BUCKET": self.bucket, "TUTORIAL_MODEL_KEY": prefix + files["model"]}
        if "tokenizer" in files:
            env["TUTORIAL_TOKENIZER_KEY"] = prefix + files["tokenizer"]
        return env


@contextlib.contextmanager
def local_s3(server_core: int | None = None) -> Iterator[LocalS3]:
    """A moto S3 server on 127.0.0.1 (its threads pinned to ``server_core``) with one bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    before = os.sched_getaffinity(0)
    pin(server_core)  # the server's threads inherit the core; this thread goes back afterwards
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    os.sched_setaffinity(0, before)
    endpoint = f"http://127.0.0.1:{server._server.server_port}"  # type: ignore[union-attr]
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    try:
        yield LocalS3(endpoint, client, BUCKET)
    finally:
        server.stop()


@dataclass
class FreshRun:
    """What a fresh process reported (its result line), its stdout log lines and wall-clock times."""

    result: dict[str, Any]
    logs: list[dict[str, Any]]
    spawned_wall: float
    stderr: str = ""


def run_fresh(
    code: str, env: dict[str, str], args: list[str] | None = None, timeout_s: float = 180, flags: tuple[str, ...] = ()
) -> FreshRun:
    """Run ``code`` in a new interpreter (``python -c``) with exactly ``env``, in a private TMPDIR (its cwd too)."""
    with tempfile.TemporaryDirectory(prefix="onnxfn-bench-tmp-") as tmp:
        spawned = time.time()
        completed = subprocess.run(
            [sys.executable, *flags, "-c", code, *(args or [])],
            cwd=tmp,
            env={**env, "TMPDIR": tmp},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"fresh process failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    result: dict[str, Any] | None = None
    logs: list[dict[str, Any]] = []
    stderr = completed.stderr
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line.removeprefix(RESULT_PREFIX))
        elif line.startswith("{"):
            with contextlib.suppress(ValueError):
                logs.append(json.loads(line))
    if result is None:
        raise RuntimeError(f"fresh process printed no result line:\n{completed.stdout[-2000:]}")
    return FreshRun(result, logs, spawned, stderr)


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path

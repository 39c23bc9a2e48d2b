"""A Lambda-like place to measure in: a local S3 (moto server), the function's environment, fresh processes.

- S3: ``ThreadedMotoServer`` on 127.0.0.1 in the bench process (its threads pinned to one core);
  artifacts uploaded with ``onnxfn.local.upload.upload_artifact`` as a deploy does.
- Environment: what the stack gives the function (``stacks/onnxfn_stack.py``: tracing off by
  default, log level INFO, the load mode of ``cdk.json``) and Lambda's own variables as
  ``onnxfn.local.cloud.lambda_environment`` defines them (``_HANDLER`` included: the handlers start
  the model's download at init only where it is set), fake credentials, ``AWS_ENDPOINT_URL`` to the
  local S3; never a developer's AWS config or credentials.
- Fresh processes: :func:`run_fresh` starts a command (``benchmarks.faithful.Runtime.command``: the
  function's runtime interpreter) and notes when each of its output lines arrived, so a log line
  can be placed on the process's timeline (the model may load during init or on the first request).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.timing import ROOT
from contract import environment

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
    environment.LOG_LEVEL: "INFO",
    environment.TRACE_DISABLED: "true",
    environment.METRICS_NAMESPACE: environment.DEFAULT_NAMESPACE,
    environment.LOAD_MODE: "lazy",
}
RESULT_PREFIX = "BENCH-RESULT "
ONNXFN_HANDLER = "handlers.api.lambda_handler"  # the API function's handler, as the stack sets it


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


def base_environment() -> dict[str, str]:
    """What a function process gets of this machine: a plain PATH and a locale, nothing of the dev venv."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "en_US.UTF-8"}


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
    model: str,
    model_env: dict[str, str],
    endpoint: str | None,
    code_dir: Path,
    memory_mb: int = MEMORY_MB,
    load_mode: str | None = None,
    runtime: str = "python3.12",
) -> dict[str, str]:
    """The environment a deployed onnxfn API function of ``model`` has, pointed at the local S3.

    ``code_dir``: the function's code (Lambda's ``/var/task``); ``load_mode``: what the stack puts
    in the function's load-mode variable (``cdk.json``); None keeps ``FUNCTION_DEFAULTS``' lazy.
    """
    env = {
        **base_environment(),
        **aws_environment(endpoint),
        **FUNCTION_DEFAULTS,
        **lambda_variables(f"onnxfn-bench-{model}", memory_mb, runtime, ONNXFN_HANDLER, code_dir),
        "POWERTOOLS_SERVICE_NAME": f"onnxfn-{model}",
        **model_env,
    }
    if load_mode is not None:
        from contract.environment import LOAD_MODE

        env.pop("LOAD_MODE", None)
        env[LOAD_MODE] = load_mode
    return env


def lambda_variables(name: str, memory_mb: int, runtime: str, handler: str, code_dir: Path) -> dict[str, str]:
    """The variables Lambda itself sets in an (on-demand) execution environment: the one definition,
    ``onnxfn.local.cloud.lambda_environment`` (``_HANDLER`` included, which the handlers read to know
    they run in Lambda)."""
    from onnxfn.local.cloud import lambda_environment

    arn = f"arn:aws:lambda:{REGION}:000000000000:function:{name}"
    return lambda_environment(name, memory_mb, runtime, handler, code_dir, arn)


def reported_environment(env: dict[str, str]) -> dict[str, str]:
    """The function variables a report shows (credentials masked, host variables left out)."""
    keep = ("AWS_", "POWERTOOLS_", "LOAD_MODE", "MODEL_", "MANIFEST_", "TUTORIAL_", "PYTHON", "_HANDLER", "LAMBDA_TASK")
    shown = {k: v for k, v in env.items() if k.startswith(keep) and k != "PYTHONPATH"}
    for key in FAKE_CREDENTIALS:
        if key in shown:
            shown[key] = "testing (fake)"
    return dict(sorted(shown.items()))


def manifest_files(model: str) -> dict[str, str]:
    """Role → file name of the artifact's files (``model``, ``tokenizer``), from its manifest."""
    manifest = json.loads((ARTIFACTS / model / "manifest.json").read_text())
    return {entry["role"]: entry["path"] for entry in manifest["files"]}


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
    """What a fresh process reported (its result line), its JSON log lines and wall-clock times."""

    result: dict[str, Any]
    logs: list[dict[str, Any]]
    spawned_wall: float
    stderr: str = ""
    log_walls: list[float] = field(default_factory=list)  # when each of ``logs`` reached this process


def _read_lines(stream: Any, into: list[tuple[float, str]]) -> None:
    for line in iter(stream.readline, ""):
        into.append((time.time(), line))
    stream.close()


def run_fresh(command: list[str], env: dict[str, str], timeout_s: float = 180) -> FreshRun:
    """Run ``command`` with exactly ``env``, in a private TMPDIR (its cwd too); collect its report.

    stdout and stderr are read as they are written (the process writes unbuffered, as Lambda's
    runtime makes it), each line stamped with its arrival time.
    """
    import threading

    with tempfile.TemporaryDirectory(prefix="onnxfn-bench-tmp-") as tmp:
        spawned = time.time()
        process = subprocess.Popen(
            command,
            cwd=tmp,
            env={**env, "TMPDIR": tmp},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        out: list[tuple[float, str]] = []
        err: list[tuple[float, str]] = []
        readers = [
            threading.Thread(target=_read_lines, args=(process.stdout, out), daemon=True),
            threading.Thread(target=_read_lines, args=(process.stderr, err), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError(f"fresh process timed out after {timeout_s:.0f} s") from None
        finally:
            for reader in readers:
                reader.join(timeout=10)
    stderr = "".join(line for _, line in err)
    if code != 0:
        raise RuntimeError(f"fresh process failed ({code}):\n{stderr[-3000:]}")
    result: dict[str, Any] | None = None
    logs: list[dict[str, Any]] = []
    walls: list[float] = []
    for wall, line in sorted(out + err, key=lambda item: item[0]):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line.removeprefix(RESULT_PREFIX))
        elif line.startswith("{"):
            with contextlib.suppress(ValueError):
                logs.append(json.loads(line))
                walls.append(wall)
    if result is None:
        stdout = "".join(line for _, line in out)
        raise RuntimeError(f"fresh process printed no result line:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return FreshRun(result, logs, spawned, stderr, walls)


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path

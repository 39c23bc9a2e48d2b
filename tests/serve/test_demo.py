"""`make demo` runs `onnxfn demo`: the local app started, driven over HTTP, a batch file and a queue
message scored, real results printed, everything stopped."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.serve.conftest import ROOT


def _demo(real_assembly, env):
    return subprocess.run(
        [sys.executable, "-m", "onnxfn.cli", "demo", "--app", str(real_assembly)],
        cwd=ROOT,
        env={**env, "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_demo_prints_real_results_for_both_models(real_assembly):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    result = _demo(real_assembly, env)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "digits — POST /v2/models/digits/infer" in out and "V1 predict → 200" in out
    assert "minilm — POST /v2/models/minilm/infer → [5, 384]" in out
    # the guitar sentences are each other's nearest neighbour: the embeddings mean something
    guitar = next(line for line in out.splitlines() if line.startswith("│ A man is playing a guitar"))
    assert "Someone performs music" in guitar
    assert "rows scored, 0 failed" in out and "/200 match the true labels" in out
    assert "queue message" in out and "embedding [1, 384]" in out
    assert "stopped:" in out
    assert "Traceback" not in out + result.stderr
    # faithful by default: the runtime's interpreter and the memory's CPU share, said per function
    assert "Python 3.12" in out and "(python3.12, x86_64, code + layer" in out
    assert "0.29 vCPU (cgroup quota)" in out and "1.00 vCPU (cgroup quota)" in out  # digits 512 MB, minilm
    assert "NOT what deploys" not in out


def test_without_the_runtimes_interpreter_the_demo_still_runs_and_says_it_is_not_faithful(real_assembly, tmp_path):
    """No python3.12 on PATH, in pyenv or through uv: the demo falls back to the dev venv, loudly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "ONNXFN_PYTHON"))}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin"
    env["PYENV_ROOT"] = str(tmp_path / "no-pyenv")
    result = _demo(real_assembly, env)
    assert result.returncode == 0, result.stderr[-2000:]
    out = " ".join(result.stdout.split())  # rich wraps long lines
    assert "no Python 3.12 interpreter found" in out and "uv python install 3.12" in out
    assert "the demo runs on the development venv instead: NOT what deploys" in out
    assert "dev venv Python 3.11" in out
    assert "minilm — POST /v2/models/minilm/infer → [5, 384]" in result.stdout

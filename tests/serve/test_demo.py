"""`make demo` runs `onnxfn demo`: the local app started, driven over HTTP, a batch file and a queue
message scored, real results printed, everything stopped."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.serve.conftest import ROOT


def test_demo_prints_real_results_for_both_models(real_assembly):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    result = subprocess.run(
        [sys.executable, "-m", "onnxfn.cli", "demo", "--app", str(real_assembly)],
        cwd=ROOT,
        env={**env, "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
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

"""schemathesis against the OpenAPI document the API serves, run against `onnxfn serve`: every
operation fuzzed (positive and negative cases, coverage, stateful), no 5xx anywhere.

Bounded here (``SCHEMATHESIS_EXAMPLES``, default 10 per operation and phase); ``make fuzz`` runs 200."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def test_no_server_error_for_any_generated_request(served_app, tmp_path):
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{served_app.url}/swagger?format=json",
        "--header",
        "x-api-key: test-key",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(EXAMPLES),
        "--generation-deterministic",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-junit-path",
        str(tmp_path / "junit.xml"),
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts, output[-2000:]
    generated, passed = int(counts.group(1)), int(counts.group(2))
    assert generated == passed and generated >= 300, output[-2000:]
    tested = re.search(r"Tested: (\d+)", output)
    assert tested and int(tested.group(1)) >= 12  # every operation of the document

"""50 concurrent clients mixing valid and invalid requests against ``onnxfn serve`` (wrk, loopback):
every response the status its request must get, p99 reported, memory flat.

Bounded here (``LOAD_SECONDS``, default 20 s); ``make load`` runs 2 minutes."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.serve.load import run_load

pytestmark = pytest.mark.slow
SECONDS = int(os.environ.get("LOAD_SECONDS", "20"))


def test_mixed_load_gets_only_expected_answers_and_memory_stays_flat(served_app, tmp_path):
    if not shutil.which("wrk"):
        pytest.fail("wrk is missing: `make test` installs Debian's wrk (apt-get install wrk)")
    # warm both models first, as a deployed app would be after its first requests
    for model in ("digits", "minilm"):
        assert served_app.client.request("GET", f"/v2/models/{model}/ready").status == 200
    # a first burst starts every worker the concurrency allows (cold starts add memory: not a leak)
    run_load(served_app.url, "test-key", served_app.process.pid, 5, ["digits", "minilm"])
    result = run_load(served_app.url, "test-key", served_app.process.pid, SECONDS, ["digits", "minilm"])
    summary = result.summary()
    (tmp_path / "load.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))  # shown with -s; make load prints it
    assert result.connections == 50
    assert result.requests > SECONDS * 10, summary
    assert result.unexpected == 0, result.per_kind
    for name, kind in result.per_kind.items():
        assert kind["checked"] > 0, name
        assert kind["p99_us"] < 10_000_000, name  # every request answered within wrk's timeout
    # memory: across the measured run, the last third grows by less than 15% and 100 MB over the first
    first, last = summary["memory_mb_first_third"], summary["memory_mb_last_third"]
    assert last <= first * 1.15 + 1 and last - first < 100, summary

"""SnapStart: the model is loaded and warmed up during init, and the runtime hooks run in Lambda's
order (init → before-snapshot hooks → snapshot … restore → after-restore hooks → invoke), leaving
no AWS client from before the snapshot and no random state shared between restored environments."""

from __future__ import annotations

import importlib
import random
import sys

import numpy as np
import pytest
import snapshot_restore_py as hooks

from handlers.runtime import aws

DIGITS_BODY = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}


@pytest.fixture
def registry(monkeypatch):
    """Empty hook registries, as in a new execution environment."""
    monkeypatch.setattr(hooks, "_before_snapshot_registry", [])
    monkeypatch.setattr(hooks, "_after_restore_registry", [])
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    yield hooks
    sys.modules.pop("handlers.api", None)


def _run(registered):
    for func, args, kwargs in registered:
        func(*args, **kwargs)


def test_hooks_run_in_lambdas_order(serve, registry, monkeypatch):
    served = serve("digits")
    monkeypatch.setenv("LOAD_MODE", "lazy")  # SnapStart loads at init whatever the load mode says
    sys.modules.pop("handlers.api", None)

    importlib.import_module("handlers.api")  # 1. init, ahead of the snapshot
    assert served.store.ready
    assert len(served.get_calls) == 2
    assert served.store._s3 is not None
    aws.client("sqs")  # any client an entry point created during init
    assert len(registry.get_before_snapshot()) == 1 and len(registry.get_after_restore()) == 1

    _run(registry.get_before_snapshot())  # 2. before the snapshot: no client is frozen into it
    assert served.store._s3 is None
    assert aws._clients == {}

    random.seed(7)  # what the snapshot froze: every restore would start from this state
    np.random.seed(7)
    frozen, frozen_np = random.getstate(), np.random.get_state()[1].copy()
    _run(registry.get_after_restore())  # 3. after a restore: its own random streams
    assert random.getstate() != frozen
    assert not np.array_equal(np.random.get_state()[1], frozen_np)

    reply = served.client.post("/v2/models/digits/infer", DIGITS_BODY)  # 4. the first invoke after restore
    assert reply.status == 200
    assert len(served.get_calls) == 2  # served from the snapshotted session: nothing fetched again
    assert served.store._s3 is None  # and no client was needed


def test_a_restored_environment_fetches_with_a_new_client(serve, registry, monkeypatch):
    served = serve("digits")
    sys.modules.pop("handlers.api", None)
    importlib.import_module("handlers.api")
    before = served.store._s3
    _run(registry.get_before_snapshot())
    _run(registry.get_after_restore())
    served.store._manifest = None  # a reload after restore (e.g. a new manifest version) needs S3 again
    assert served.store.manifest().name == "digits"
    assert served.store._s3 is not None and served.store._s3 is not before


def test_on_demand_init_registers_no_hooks(serve, registry, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    served = serve("digits")
    sys.modules.pop("handlers.api", None)
    importlib.import_module("handlers.api")
    assert registry.get_before_snapshot() == [] and registry.get_after_restore() == []
    assert served.store.ready is False  # lazy: nothing fetched at init

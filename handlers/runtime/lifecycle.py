"""What an execution environment does once, at init: load the model when its load mode says so, and
SnapStart's runtime hooks.

``LOAD_MODE=eager`` (what the stack sets when the artifact fits the init window, and always with
SnapStart or provisioned concurrency): the model is fetched, verified, loaded and run once on a
synthetic input during init. Lambda runs init with its init CPU burst, while an invocation runs at
the memory's CPU share, so the first request then pays only its own inference. A failure is logged
and never fatal to init: the first request retries, as in lazy mode.

Under SnapStart (``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``) the snapshot is taken after init and
its hooks, and may be restored many times: before the snapshot, AWS clients are dropped (their
credentials and open connections must not be frozen into it); after each restore, the random
generators are reseeded from the OS (so restored environments do not share one stream) and clients
are created afresh on first use. The loaded, warmed-up session is what the snapshot is for.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from contract.environment import INITIALIZATION_TYPE, LOAD_MODE
from contract.manifest import Manifest
from handlers.runtime import aws, prefetch
from handlers.runtime.errors import OnnxfnError
from handlers.runtime.model_store import get_store
from handlers.runtime.observability import logger

WARM_UP_TEXT = "onnxfn warm-up"

_initialized = False


def snapstart() -> bool:
    """Whether this init is SnapStart's, ahead of a snapshot."""
    return os.environ.get(INITIALIZATION_TYPE, "") == "snap-start"


def eager() -> bool:
    return os.environ.get(LOAD_MODE, "lazy").strip().lower() == "eager" or snapstart()


def warm_up_inputs(manifest: Manifest) -> dict[str, np.ndarray]:
    """One small, valid input per manifest input: batch 1, every free dimension 1, text for BYTES."""
    inputs = {}
    for spec in manifest.inputs:
        shape = [1 if size < 0 else size for size in spec.shape]
        if spec.datatype == "BYTES":
            inputs[spec.name] = np.full(shape, WARM_UP_TEXT.encode(), dtype=object)
        else:
            from handlers.runtime.datatypes import OIP_TO_NUMPY

            inputs[spec.name] = np.zeros(shape, dtype=OIP_TO_NUMPY[spec.datatype])
    return inputs


def load_and_warm_up() -> None:
    """Load the model now and run it once, so the first request finds kernels and buffers ready."""
    started = time.perf_counter()
    try:
        try:
            model = get_store().get_model()
        finally:
            prefetch.discard()  # whatever the load did not take is not kept for the function's lifetime
        loaded = time.perf_counter()
        manifest = model.manifest
        model.pipeline.run(warm_up_inputs(manifest), [spec.name for spec in manifest.outputs])
    except OnnxfnError as exc:
        logger.error("model load at init failed; the first request retries", extra={"reason": exc.message})
        return
    except Exception:  # a warm-up the graph rejects must not fail init: requests are checked on their own
        logger.exception("warm-up inference failed; the model stays loaded")
        return
    done = time.perf_counter()
    logger.info(
        "model ready at init",
        extra={"load_ms": round((loaded - started) * 1000, 1), "warm_up_ms": round((done - loaded) * 1000, 1)},
    )


def before_snapshot() -> None:
    """Nothing that belongs to one environment goes into the snapshot: AWS clients (credentials, sockets)."""
    aws.reset_clients()
    get_store().reset_client()
    prefetch.discard()


def after_restore() -> None:
    """A restored environment draws its own random numbers and creates its clients on first use."""
    random.seed()
    np.random.seed()  # the legacy global generator (numpy's Generator objects are not used here)
    aws.reset_clients()
    get_store().reset_client()


def _register(register_before: Callable[..., Any], register_after: Callable[..., Any]) -> None:
    register_before(before_snapshot)
    register_after(after_restore)


def init_environment() -> None:
    """Run once per execution environment from each entry point's module scope."""
    global _initialized
    if _initialized:
        return
    _initialized = True
    if snapstart():
        try:  # the runtime's module (the snapshot-restore-py package locally)
            from snapshot_restore_py import register_after_restore, register_before_snapshot
        except ImportError:
            logger.warning("SnapStart init without snapshot_restore_py: no runtime hooks registered")
        else:
            _register(register_before_snapshot, register_after_restore)
    if eager():
        load_and_warm_up()


def reset() -> None:
    """Tests: let the next ``init_environment`` run again, as in a new execution environment."""
    global _initialized
    _initialized = False
    prefetch.discard()

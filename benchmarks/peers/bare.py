"""The floor: a bare ``onnxruntime.InferenceSession`` and its ``run``, on tensors already prepared.

Nothing but onnxruntime: no event, no validation, no codec, no pipeline. For ``minilm`` it is given
pre-tokenized ``input_ids`` / ``attention_mask`` / ``token_type_ids`` and returns the raw
``last_hidden_state`` (no pooling), so tokenization, pooling and normalization are part of what the
handler adds over it. The session options are the careful hand-written ones for this artifact (one
intra-op thread per vCPU, no inter-op pool, no second optimization pass for a graph saved
pre-optimized), so the floor is as low as the artifact allows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort


def create_session(model: bytes | str, threads: int = 1, preoptimized: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL if preoptimized else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    )
    options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def feeds_for(session: ort.InferenceSession, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors the graph takes (a BERT export may or may not take ``token_type_ids``)."""
    names = {i.name for i in session.get_inputs()}
    return {name: value for name, value in tensors.items() if name in names}


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[Any]:
    outputs: list[Any] = session.run(None, feeds)
    return outputs

"""``classification``: the model's scores -> probabilities (softmax of logits when asked), argmax, label names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from contract.manifest import ClassificationPipeline, Manifest, ManifestError
from handlers.runtime.pipelines.base import Tensors, check_inputs, session_io


class ClassificationRunner:
    """Features in; ``probabilities``, ``label`` (argmax) and ``label_name`` out, as requested."""

    def __init__(self, manifest: Manifest, session: Any, config: ClassificationPipeline) -> None:
        check_inputs(manifest, session)
        _, outputs = session_io(session)
        if config.scores_output not in outputs:
            raise ManifestError(f"classification: the model has no output {config.scores_output!r}")
        self._session = session
        self._config = config
        self._labels = np.array([label.encode("utf-8") for label in config.labels], dtype=object)

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Tensors:
        (scores,) = self._session.run([self._config.scores_output], dict(inputs))
        scores = np.asarray(scores, dtype=np.float32)
        if self._config.softmax:
            shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores = shifted / shifted.sum(axis=-1, keepdims=True)
        label = scores.argmax(axis=-1).astype(np.int64)
        results: Tensors = {"probabilities": scores, "label": label}
        if len(self._labels):
            results["label_name"] = self._labels[label]
        return {name: results[name] for name in outputs}


def classification_outputs(manifest_labels: Sequence[str], classes: int) -> list[dict[str, Any]]:
    """The client-facing outputs a classification pipeline declares (used by the CLI's manifest writer)."""
    specs: list[dict[str, Any]] = [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
    ]
    if manifest_labels:
        specs.insert(1, {"name": "label_name", "datatype": "BYTES", "shape": [-1]})
    return specs


def build(manifest: Manifest, session: Any, files: Mapping[str, bytes]) -> ClassificationRunner:
    config = manifest.pipeline
    assert isinstance(config, ClassificationPipeline)
    return ClassificationRunner(manifest, session, config)

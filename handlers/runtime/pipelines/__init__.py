"""What turns a client's tensors into the model's feeds and the model's outputs into the client's.

One module per pipeline kind, registered in ``PIPELINES``; a manifest without a pipeline gets
``raw`` (tensors passed through). Each builder checks that the session fits the manifest, so a
mismatched artifact fails the load, not a request. To add a kind: its config in
``contract/pipelines.py``, a module here with a ``build(manifest, session, files)``, one entry below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from contract.manifest import Manifest
from handlers.runtime.pipelines import classification, custom, images, raw, text_embedding
from handlers.runtime.pipelines.base import Pipeline, Tensors

__all__ = ["PIPELINES", "Pipeline", "Tensors", "build_pipeline"]

Builder = Callable[[Manifest, Any, Mapping[str, bytes]], Pipeline]

PIPELINES: dict[str, Builder] = {
    "text-embedding": text_embedding.build,
    "classification": classification.build,
    "image-classification": images.build_classification,
    "image-detection": images.build_detection,
    "custom": custom.build,
}


def build_pipeline(manifest: Manifest, session: Any, files: Mapping[str, bytes]) -> Pipeline:
    """The pipeline the manifest declares, checked against the session; ``files`` are the artifact's files."""
    if manifest.pipeline is None:
        return raw.build(manifest, session, files)
    return PIPELINES[manifest.pipeline.kind](manifest, session, files)

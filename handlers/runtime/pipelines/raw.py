"""No pipeline: the client's tensors are the model's tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from contract.manifest import Manifest, ManifestError
from handlers.runtime.pipelines.base import Tensors, check_inputs, session_io


class RawPipeline:
    """Client tensors are the model's tensors."""

    def __init__(self, manifest: Manifest, session: Any) -> None:
        check_inputs(manifest, session)
        inputs, outputs = session_io(session)
        missing = set(inputs) - {s.name for s in manifest.inputs}
        if missing:
            raise ManifestError(f"the model needs inputs the manifest does not declare: {sorted(missing)}")
        for spec in manifest.outputs:
            if outputs.get(spec.name) != spec.datatype:
                raise ManifestError(f"output {spec.name!r} {spec.datatype}: the model has {sorted(outputs.items())}")
        self._session = session

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Tensors:
        results = self._session.run(list(outputs), dict(inputs))
        return dict(zip(outputs, results, strict=True))


def build(manifest: Manifest, session: Any, files: Mapping[str, bytes]) -> RawPipeline:
    return RawPipeline(manifest, session)

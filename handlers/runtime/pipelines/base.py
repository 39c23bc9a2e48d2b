"""What every pipeline is: a ``run`` from validated client tensors to the requested outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from contract.manifest import Manifest, ManifestError
from handlers.runtime.datatypes import ORT_TO_OIP

Tensors = dict[str, np.ndarray]


class Pipeline(Protocol):
    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Tensors:
        """Score validated inputs; return the requested outputs by name."""
        ...


def session_io(session: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The session's inputs and outputs as ``{name: OIP datatype}``."""
    inputs = {i.name: ORT_TO_OIP.get(i.type, i.type) for i in session.get_inputs()}
    outputs = {o.name: ORT_TO_OIP.get(o.type, o.type) for o in session.get_outputs()}
    return inputs, outputs


def check_inputs(manifest: Manifest, session: Any) -> None:
    """Every manifest input is a model input of the same datatype."""
    inputs, _ = session_io(session)
    for spec in manifest.inputs:
        if inputs.get(spec.name) != spec.datatype:
            raise ManifestError(f"input {spec.name!r} {spec.datatype}: the model has {sorted(inputs.items())}")

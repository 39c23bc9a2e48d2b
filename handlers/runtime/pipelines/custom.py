"""A model's own pre- and post-processing, as a Python module shipped in its artifact.

The module (``pipeline.module`` in the manifest, ``pipeline.py`` by default) defines one subclass of
:class:`ModelPipeline`. The function runs it on every request: ``preprocess`` turns the client's checked
tensors (as the manifest's ``inputs`` declare them) into the model's feeds, the session runs, and
``postprocess`` turns the model's outputs into the client's (as the manifest's ``outputs`` declare them).
``onnxfn add``'s gate and ``onnxfn serve`` run the same class. Raise
``handlers.runtime.errors.InvalidInput`` for a request the model cannot take: the client gets a 400
with your message; any other exception is a 500 without detail. Example::

    import numpy as np
    from handlers.runtime.errors import InvalidInput
    from handlers.runtime.pipelines.custom import ModelPipeline

    class Pipeline(ModelPipeline):
        INPUTS = [{"name": "celsius", "datatype": "FP32", "shape": [-1]}]
        OUTPUTS = [{"name": "warm", "datatype": "BOOL", "shape": [-1]}]

        def preprocess(self, inputs):
            return {"x": (inputs["celsius"][:, None] - 20.0) / 10.0}

        def postprocess(self, outputs, inputs):
            return {"warm": outputs["y"][:, 0] > 0.5}

The module is as trusted as the model: both come from the artifact whose manifest sha256 the function
is pinned to, and both are checked before use.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from contract.manifest import CustomPipeline, Manifest, ManifestError
from handlers.runtime.pipelines.base import Tensors


class ModelPipeline:
    """Subclass this in the artifact's module; see the module's documentation."""

    INPUTS: ClassVar[list[dict[str, Any]]] = []  # the client's tensors (written into the manifest by onnxfn add)
    OUTPUTS: ClassVar[list[dict[str, Any]]] = []  # what the client gets back
    # The model output ``onnxfn add``'s gate compares between the original and the prepared model; None:
    # the first numeric client output after ``postprocess``.
    DRIFT_OUTPUT: ClassVar[str | None] = None

    def __init__(
        self, manifest: Manifest, session: Any, files: Mapping[str, bytes], options: Mapping[str, Any]
    ) -> None:
        self.manifest = manifest
        self.session = session
        self.files = files
        self.options = dict(options)
        self.model_outputs = [o.name for o in session.get_outputs()]
        self.drift_output = type(self).DRIFT_OUTPUT

    def preprocess(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        """The model's feeds from the client's tensors."""
        raise NotImplementedError

    def postprocess(self, outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray]) -> Tensors:
        """The client's outputs from the model's (``inputs`` are the client's, for sizes and the like)."""
        raise NotImplementedError

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Tensors:
        """Every model output for ``feeds``."""
        return dict(zip(self.model_outputs, self.session.run(self.model_outputs, dict(feeds)), strict=True))

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Tensors:
        results = self.postprocess(self.infer(self.preprocess(inputs)), inputs)
        missing = [name for name in outputs if name not in results]
        if missing:
            raise RuntimeError(f"the pipeline's postprocess returned no {missing}")  # a bug of the module: 500
        return {name: results[name] for name in outputs}


def load_module(name: str, source: bytes) -> type[ModelPipeline]:
    """The ``ModelPipeline`` subclass the module ``source`` defines (``Pipeline`` when it defines several)."""
    module = types.ModuleType(f"onnxfn_pipeline_{name.removesuffix('.py')}")
    module.__file__ = name
    exec(compile(source, name, "exec"), module.__dict__)  # the artifact's own code: sha256-checked like the model
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ModelPipeline)
        and value is not ModelPipeline
        and value.__module__ == module.__name__
    ]
    chosen = [c for c in found if c.__name__ == "Pipeline"] or found
    if len(chosen) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise ManifestError(f"{name}: expected one subclass of ModelPipeline (or one named Pipeline), found {names}")
    return chosen[0]


def build(manifest: Manifest, session: Any, files: Mapping[str, bytes]) -> ModelPipeline:
    config = manifest.pipeline
    assert isinstance(config, CustomPipeline)
    cls = load_module(config.module, files[config.module])
    return cls(manifest, session, files, dict(config.options))

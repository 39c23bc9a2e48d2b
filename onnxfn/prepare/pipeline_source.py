"""``onnxfn add … --pipeline FILE``: the pre- and post-processing that goes around the model.

``FILE`` is a manifest ``pipeline`` object in JSON (an ``image-classification`` or ``image-detection``
with its size, normalization and labels; or ``{"kind": "custom", "module": "my_pipeline.py", ...}``),
or a Python module of a custom pipeline itself. The manifest then declares what the client sends and
gets (the pipeline's tensors, not the graph's), the module is shipped in the artifact, and the gate
runs the pipeline on the original and the prepared model alike.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from contract.manifest import CustomPipeline, ImagePipeline, ManifestError
from contract.pipelines import PIPELINES
from onnxfn.prepare.sources import Source, SourceError
from onnxfn.prepare.validation import Feeds, Task

IMAGE_KINDS = ("image-classification", "image-detection")
PREPROCESSED = (*IMAGE_KINDS, "custom")  # pipelines whose client tensors are not the model's feeds
SAMPLE_SIZES = ((48, 40), (64, 64), (96, 72), (40, 56))  # width, height of the generated sample images


def _config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SourceError(f"--pipeline {path}: no such file; expected a pipeline .json or a custom pipeline .py")
    if path.suffix == ".py":
        return {"kind": "custom", "module": path.name}
    if path.suffix != ".json":
        raise SourceError(f"--pipeline {path.name}: expected a .json pipeline object or a .py custom pipeline")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SourceError(f"--pipeline {path.name}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("kind") not in PIPELINES:
        raise SourceError(f"--pipeline {path.name}: expected an object whose kind is one of {', '.join(PIPELINES)}")
    return config


def apply_pipeline(source: Source, path: Path, staging: Path) -> None:
    """Put the pipeline of ``path`` around the source's model (see the module's docstring)."""
    config = _config(path)
    try:
        parsed = PIPELINES[config["kind"]](config)
    except ManifestError as exc:
        raise SourceError(f"--pipeline {path.name}: {exc}") from exc
    if isinstance(parsed, ImagePipeline):
        _images(source, parsed, config)
    elif isinstance(parsed, CustomPipeline):
        _custom(source, parsed, path if path.suffix == ".py" else path.parent / parsed.module, staging)
    else:
        raise SourceError(f"--pipeline {path.name}: {parsed.kind} is chosen by the source itself, not by --pipeline")
    source.pipeline = config
    source.samples, source.texts = [], []
    source.facts["pipeline"] = parsed.kind


def _images(source: Source, config: ImagePipeline, raw: dict[str, Any]) -> None:
    from handlers.runtime.pipelines.images import image_inputs, image_outputs

    outputs = {spec["name"]: spec for spec in source.outputs}
    scores = config.scores_output or source.outputs[0]["name"]
    if scores not in outputs:
        raise SourceError(f"--pipeline: scores_output {scores!r} is not an output of the model ({sorted(outputs)})")
    classes = int(outputs[scores]["shape"][-1]) if outputs[scores]["shape"] else 0
    if config.kind == "image-classification":
        if config.labels and classes > 0 and len(config.labels) != classes:
            raise SourceError(f"--pipeline: {len(config.labels)} labels for {classes} classes")
        source.task = Task(kind="classifier", output="probabilities")
    else:
        source.task = Task(kind="raw", output=scores)
    source.inputs, source.outputs = image_inputs(config), image_outputs(config, classes)
    source.client_samples = sample_images(config.input)


def sample_images(name: str, batches: int = 8, per_batch: int = 4) -> list[Feeds]:
    """JPEGs of smooth random shapes in a few sizes: what the gate feeds an image pipeline by default."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    samples = []
    for b in range(batches):
        items = []
        for i in range(per_batch):
            width, height = SAMPLE_SIZES[(b + i) % len(SAMPLE_SIZES)]
            image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 255, 3)))
            draw = ImageDraw.Draw(image)
            for _ in range(3):
                x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
                x1, y1 = x0 + int(rng.integers(4, width // 2)), y0 + int(rng.integers(4, height // 2))
                draw.rectangle((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=90)
            items.append(out.getvalue())
        samples.append({name: np.array(items, dtype=object)})
    return samples


def _custom(source: Source, config: CustomPipeline, module: Path, staging: Path) -> None:
    from handlers.runtime.pipelines.custom import load_module

    if not module.is_file():
        raise SourceError(f"--pipeline: the custom pipeline's module {module} does not exist")
    target = staging / config.module
    shutil.copyfile(module, target)
    try:
        cls = load_module(config.module, target.read_bytes())
    except ManifestError as exc:
        raise SourceError(f"--pipeline {module.name}: {exc}") from exc
    except Exception as exc:  # the module itself failed to import
        raise SourceError(f"--pipeline {module.name}: importing it failed ({type(exc).__name__}: {exc})") from exc
    if not cls.INPUTS or not cls.OUTPUTS:
        raise SourceError(
            f"--pipeline {module.name}: {cls.__name__} must declare INPUTS and OUTPUTS (the client's tensors)"
        )
    source.inputs, source.outputs = [dict(t) for t in cls.INPUTS], [dict(t) for t in cls.OUTPUTS]
    source.files[config.module] = (target, "code")
    numeric = [t["name"] for t in cls.OUTPUTS if t["datatype"] not in ("BYTES", "BOOL")]
    compared = cls.DRIFT_OUTPUT or (numeric[0] if numeric else None)
    if compared is None:
        raise SourceError(f"--pipeline {module.name}: no numeric output to compare; set DRIFT_OUTPUT to a model output")
    source.task = Task(kind="raw", output=compared)
    example = getattr(cls, "example_inputs", None)
    source.client_samples = list(example()) if callable(example) else []

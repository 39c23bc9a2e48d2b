"""The pipelines a manifest can declare around its model, as typed configs, one parser per kind.

A pipeline turns a client's tensors into the model's feeds and the model's outputs into the
client's (``handlers/runtime/pipelines/`` runs them). ``PIPELINES`` maps each ``kind`` to the
parser of its ``pipeline`` object; a new pipeline adds its config class and one entry here, and its
runner module in ``handlers/runtime/pipelines/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from contract.fields import ManifestError, boolean, choice, integer, mapping, number, numbers, only, string, strings

POOLING_MODES = ("mean", "cls")


@dataclass(frozen=True, kw_only=True)
class TextEmbeddingPipeline:
    """Strings in; tokenizer, model, pooling and L2 normalisation; embeddings out."""

    kind: str = "text-embedding"
    tokenizer: str = "tokenizer.json"
    max_length: int = 256
    pooling: str = "mean"
    normalize: bool = True
    hidden_output: str = "last_hidden_state"

    @property
    def files(self) -> tuple[str, ...]:
        """Artifact files the pipeline reads besides the model."""
        return (self.tokenizer,)

    @property
    def requirements(self) -> tuple[str, ...]:
        """Packages the pipeline needs beyond the function's layer (a layer of their own is built)."""
        return ()


@dataclass(frozen=True, kw_only=True)
class ClassificationPipeline:
    """Scores in; probabilities (softmax when the model gives logits), argmax and label names out."""

    kind: str = "classification"
    scores_output: str = "probabilities"
    softmax: bool = False
    labels: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        return ()

    @property
    def requirements(self) -> tuple[str, ...]:
        return ()


# The image pipelines decode JPEG and PNG with Pillow, which the function's own layer does not carry.
IMAGE_REQUIREMENTS = ("pillow==13.0.0",)
IMAGE_LAYOUTS = ("NCHW", "NHWC")
IMAGE_COLORS = ("RGB", "BGR")
BOX_FORMATS = ("xyxy", "cxcywh")
DETECTION_FORMATS = ("boxes_scores", "yolo")


@dataclass(frozen=True, kw_only=True)
class ImagePipeline:
    """JPEG or PNG bytes (or their base64) in one BYTES input; decoded, resized to ``size`` (height,
    width), scaled, normalized per channel and laid out for the model. ``image-classification`` answers
    probabilities, argmax and label names; ``image-detection`` answers boxes in the original image's
    pixels with scores and labels, after a score threshold and per-class non-maximum suppression."""

    kind: str
    input: str = "image"
    model_input: str = ""  # the graph's image input; empty: its only input
    size: tuple[int, int] = (224, 224)
    layout: str = "NCHW"
    color: str = "RGB"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # per channel, in the model's color order
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    labels: tuple[str, ...] = ()
    softmax: bool = False  # classification: the model gives logits
    scores_output: str = ""  # classification: its scores; detection: the class scores (boxes_scores)
    boxes_output: str = ""  # detection, boxes_scores: [B, N, 4] in the model input's pixels
    detection_format: str = "boxes_scores"  # or yolo: one output [B, 4 + classes, N] of cx, cy, w, h, scores
    box_format: str = "xyxy"
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100

    @property
    def files(self) -> tuple[str, ...]:
        return ()

    @property
    def requirements(self) -> tuple[str, ...]:
        return IMAGE_REQUIREMENTS


@dataclass(frozen=True, kw_only=True)
class CustomPipeline:
    """The model's own pre- and post-processing: a Python module in the artifact (``module``) defining a
    subclass of ``handlers.runtime.pipelines.custom.ModelPipeline``, with the packages it needs."""

    kind: str = "custom"
    module: str = "pipeline.py"
    requirements: tuple[str, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()  # handed to the module's class as a dict

    @property
    def files(self) -> tuple[str, ...]:
        return (self.module,)


Pipeline = TextEmbeddingPipeline | ClassificationPipeline | ImagePipeline | CustomPipeline


def _text_embedding(obj: Mapping[str, Any]) -> TextEmbeddingPipeline:
    only(obj, "pipeline", ("kind", "tokenizer", "max_length", "pooling", "normalize", "hidden_output"))
    pooling = string(obj.get("pooling", "mean"), "pipeline.pooling")
    if pooling not in POOLING_MODES:
        raise ManifestError(f"pipeline.pooling: expected one of {', '.join(POOLING_MODES)}, got {pooling!r}")
    return TextEmbeddingPipeline(
        tokenizer=string(obj.get("tokenizer", "tokenizer.json"), "pipeline.tokenizer"),
        max_length=integer(obj.get("max_length", 256), "pipeline.max_length", minimum=1),
        pooling=pooling,
        normalize=boolean(obj.get("normalize", True), "pipeline.normalize"),
        hidden_output=string(obj.get("hidden_output", "last_hidden_state"), "pipeline.hidden_output"),
    )


def _classification(obj: Mapping[str, Any]) -> ClassificationPipeline:
    only(obj, "pipeline", ("kind", "scores_output", "softmax", "labels"))
    labels = obj.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ManifestError("pipeline.labels: expected a list of strings")
    return ClassificationPipeline(
        scores_output=string(obj.get("scores_output", "probabilities"), "pipeline.scores_output"),
        softmax=boolean(obj.get("softmax", False), "pipeline.softmax"),
        labels=tuple(labels),
    )


_IMAGE_FIELDS = (
    "kind",
    "input",
    "model_input",
    "size",
    "layout",
    "color",
    "scale",
    "mean",
    "std",
    "labels",
    "softmax",
    "scores_output",
    "boxes_output",
    "detection_format",
    "box_format",
    "score_threshold",
    "iou_threshold",
    "max_detections",
)


def _image(obj: Mapping[str, Any]) -> ImagePipeline:
    only(obj, "pipeline", _IMAGE_FIELDS)
    defaults = ImagePipeline(kind=str(obj["kind"]))
    size = obj.get("size", list(defaults.size))
    if not isinstance(size, list) or len(size) != 2:
        raise ManifestError("pipeline.size: expected [height, width]")
    return ImagePipeline(
        kind=defaults.kind,
        input=string(obj.get("input", defaults.input), "pipeline.input"),
        model_input=string(obj.get("model_input", ""), "pipeline.model_input"),
        size=(integer(size[0], "pipeline.size[0]", 1), integer(size[1], "pipeline.size[1]", 1)),
        layout=choice(obj.get("layout", defaults.layout), "pipeline.layout", IMAGE_LAYOUTS),
        color=choice(obj.get("color", defaults.color), "pipeline.color", IMAGE_COLORS),
        scale=number(obj.get("scale", defaults.scale), "pipeline.scale"),
        mean=numbers(obj.get("mean", list(defaults.mean)), "pipeline.mean", 3),
        std=numbers(obj.get("std", list(defaults.std)), "pipeline.std", 3),
        labels=strings(obj.get("labels", []), "pipeline.labels"),
        softmax=boolean(obj.get("softmax", False), "pipeline.softmax"),
        scores_output=string(obj.get("scores_output", ""), "pipeline.scores_output"),
        boxes_output=string(obj.get("boxes_output", ""), "pipeline.boxes_output"),
        detection_format=choice(
            obj.get("detection_format", defaults.detection_format), "pipeline.detection_format", DETECTION_FORMATS
        ),
        box_format=choice(obj.get("box_format", defaults.box_format), "pipeline.box_format", BOX_FORMATS),
        score_threshold=number(obj.get("score_threshold", defaults.score_threshold), "pipeline.score_threshold", 0, 1),
        iou_threshold=number(obj.get("iou_threshold", defaults.iou_threshold), "pipeline.iou_threshold", 0, 1),
        max_detections=integer(obj.get("max_detections", defaults.max_detections), "pipeline.max_detections", 1),
    )


def _custom(obj: Mapping[str, Any]) -> CustomPipeline:
    only(obj, "pipeline", ("kind", "module", "requirements", "options"))
    module = string(obj.get("module", "pipeline.py"), "pipeline.module")
    if not module.endswith(".py") or "/" in module or module.startswith("."):
        raise ManifestError(f"pipeline.module: expected a .py file at the artifact's top level, got {module!r}")
    options = mapping(obj.get("options", {}), "pipeline.options")
    return CustomPipeline(
        module=module,
        requirements=strings(obj.get("requirements", []), "pipeline.requirements"),
        options=tuple(sorted(options.items())),
    )


# kind -> parser of the manifest's ``pipeline`` object (already known to be an object with that kind)
PIPELINES: dict[str, Callable[[Mapping[str, Any]], Pipeline]] = {
    "text-embedding": _text_embedding,
    "classification": _classification,
    "image-classification": _image,
    "image-detection": _image,
    "custom": _custom,
}
PIPELINE_KINDS = tuple(PIPELINES)

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

from contract.fields import ManifestError, boolean, integer, only, string

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


Pipeline = TextEmbeddingPipeline | ClassificationPipeline


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


# kind -> parser of the manifest's ``pipeline`` object (already known to be an object with that kind)
PIPELINES: dict[str, Callable[[Mapping[str, Any]], Pipeline]] = {
    "text-embedding": _text_embedding,
    "classification": _classification,
}
PIPELINE_KINDS = tuple(PIPELINES)

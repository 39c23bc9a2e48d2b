"""What turns a client's tensors into the model's feeds and the model's outputs into the client's.

Declared in the manifest: ``text-embedding`` (strings -> tokenizer -> model -> pooling -> L2
normalisation), ``classification`` (scores -> probabilities, argmax, label names) or none (raw
tensors, passed through). Each pipeline checks at build time that the session fits the manifest,
so a mismatched artifact fails the load, not a request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from contract.manifest import ClassificationPipeline, Manifest, ManifestError, TextEmbeddingPipeline
from handlers.runtime.datatypes import ORT_TO_OIP
from handlers.runtime.errors import InvalidInput

Tensors = dict[str, np.ndarray]


class Pipeline(Protocol):
    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Tensors:
        """Score validated inputs; return the requested outputs by name."""
        ...


def _session_io(session: Any) -> tuple[dict[str, str], dict[str, str]]:
    inputs = {i.name: ORT_TO_OIP.get(i.type, i.type) for i in session.get_inputs()}
    outputs = {o.name: ORT_TO_OIP.get(o.type, o.type) for o in session.get_outputs()}
    return inputs, outputs


class RawPipeline:
    """Client tensors are the model's tensors."""

    def __init__(self, manifest: Manifest, session: Any) -> None:
        inputs, outputs = _session_io(session)
        for spec in manifest.inputs:
            if inputs.get(spec.name) != spec.datatype:
                raise ManifestError(f"input {spec.name!r} {spec.datatype}: the model has {sorted(inputs.items())}")
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


TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Text past this many characters per token of max_length is cut before tokenizing: the tokenizer
# would drop its tokens anyway (truncation), but only after costing ~120 bytes of memory and ~1.5 us
# of CPU per character (one 6 MB string: 742 MB and 9.5 s). Natural text runs 3-6 characters a token.
CHARS_PER_TOKEN = 64


class TextTokenizer:
    """Texts to a BERT-family model's feeds, exactly as the function makes them (``onnxfn add``'s
    validation gate uses this class too, so it checks the code that deploys)."""

    def __init__(self, tokenizer_json: bytes | str, max_length: int, feed_names: Sequence[str]) -> None:
        from tokenizers import Tokenizer

        text = tokenizer_json.decode("utf-8") if isinstance(tokenizer_json, bytes) else tokenizer_json
        tokenizer = Tokenizer.from_str(text)
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.enable_padding()
        self._tokenizer = tokenizer
        self._limit = max_length * CHARS_PER_TOKEN
        self._feeds = [name for name in TOKEN_INPUTS if name in feed_names]

    def __call__(self, texts: list[str]) -> Tensors:
        encodings = self._tokenizer.encode_batch([text[: self._limit] for text in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {name: feeds[name] for name in self._feeds}


def pool(hidden: np.ndarray, feeds: Mapping[str, np.ndarray], pooling: str, normalize: bool) -> np.ndarray:
    """Sentence embeddings from the encoder's hidden states: [CLS] or the mask-weighted mean (the plain
    mean when the model takes no attention mask), L2-normalised when asked."""
    if pooling == "cls":
        pooled = hidden[:, 0, :]
    elif "attention_mask" in feeds:
        mask = feeds["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
    else:
        pooled = hidden.mean(axis=1)
    if normalize:
        pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return np.asarray(pooled, dtype=np.float32)


class TextEmbeddingRunner:
    """Strings in (one BYTES input), sentence embeddings out (one FP32 output)."""

    TOKEN_INPUTS = TOKEN_INPUTS
    CHARS_PER_TOKEN = CHARS_PER_TOKEN

    def __init__(self, manifest: Manifest, session: Any, config: TextEmbeddingPipeline, tokenizer_json: bytes) -> None:
        if len(manifest.inputs) != 1 or manifest.inputs[0].datatype != "BYTES":
            raise ManifestError("text-embedding: expected exactly one BYTES input in the manifest")
        if len(manifest.outputs) != 1 or manifest.outputs[0].datatype != "FP32":
            raise ManifestError("text-embedding: expected exactly one FP32 output in the manifest")
        inputs, outputs = _session_io(session)
        unknown = set(inputs) - set(self.TOKEN_INPUTS)
        if unknown or "input_ids" not in inputs:
            raise ManifestError(f"text-embedding: model inputs {sorted(inputs)} are not {self.TOKEN_INPUTS}")
        if config.hidden_output not in outputs:
            raise ManifestError(f"text-embedding: the model has no output {config.hidden_output!r}")
        self.tokenize = TextTokenizer(tokenizer_json, config.max_length, list(inputs))
        self._session = session
        self._config = config
        self._input = manifest.inputs[0].name
        self._output = manifest.outputs[0].name

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Tensors:
        texts = []
        for index, item in enumerate(inputs[self._input].reshape(-1)):
            try:
                texts.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"input {self._input!r} element {index}: expected UTF-8 text") from exc
        feeds = self.tokenize(texts)
        (hidden,) = self._session.run([self._config.hidden_output], feeds)
        return {self._output: pool(hidden, feeds, self._config.pooling, self._config.normalize)}


class ClassificationRunner:
    """Features in; ``probabilities``, ``label`` (argmax) and ``label_name`` out, as requested."""

    def __init__(self, manifest: Manifest, session: Any, config: ClassificationPipeline) -> None:
        inputs, outputs = _session_io(session)
        for spec in manifest.inputs:
            if inputs.get(spec.name) != spec.datatype:
                raise ManifestError(f"input {spec.name!r} {spec.datatype}: the model has {sorted(inputs.items())}")
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


def build_pipeline(manifest: Manifest, session: Any, files: Mapping[str, bytes]) -> Pipeline:
    """The pipeline the manifest declares, checked against the session."""
    config = manifest.pipeline
    if isinstance(config, TextEmbeddingPipeline):
        return TextEmbeddingRunner(manifest, session, config, files[config.tokenizer])
    if isinstance(config, ClassificationPipeline):
        return ClassificationRunner(manifest, session, config)
    return RawPipeline(manifest, session)

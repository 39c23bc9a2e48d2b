"""``text-embedding``: strings -> the model's tokenizer -> the encoder -> pooling -> L2 normalisation.

``TextTokenizer`` and ``pool`` are also what ``onnxfn add``'s validation gate runs, through this
module's ``build``: the gate checks the code that deploys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from contract.manifest import Manifest, ManifestError, TextEmbeddingPipeline
from handlers.runtime.errors import InvalidInput
from handlers.runtime.pipelines.base import Tensors, session_io

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
        inputs, outputs = session_io(session)
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


def build(manifest: Manifest, session: Any, files: Mapping[str, bytes]) -> TextEmbeddingRunner:
    config = manifest.pipeline
    assert isinstance(config, TextEmbeddingPipeline)
    return TextEmbeddingRunner(manifest, session, config, files[config.tokenizer])

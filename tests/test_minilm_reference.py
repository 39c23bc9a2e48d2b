"""The served minilm embeddings agree with the original sentence-transformers model.

The reference vectors were computed once from the original PyTorch model
(tests/fixtures/make_minilm_reference.py) and are committed, since computing them needs torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.npz"


def test_embeddings_agree_with_sentence_transformers(serve):
    reference = np.load(FIXTURE, allow_pickle=False)
    sentences = [str(s) for s in reference["sentences"]]
    expected = reference["embeddings"].astype(np.float32)
    assert len(sentences) >= 50 and expected.shape == (len(sentences), 384)
    client = serve("minilm").client
    got = []
    for start in range(0, len(sentences), 16):
        chunk = sentences[start : start + 16]
        reply = client.post(
            "/v2/models/minilm/infer",
            {"inputs": [{"name": "text", "shape": [len(chunk)], "datatype": "BYTES", "data": chunk}]},
        )
        assert reply.status == 200, reply.body
        output = reply.json()["outputs"][0]
        got.append(np.array(output["data"], dtype=np.float32).reshape(output["shape"]))
    embeddings = np.concatenate(got)
    cosine = np.sum(embeddings * expected, axis=1) / (
        np.linalg.norm(embeddings, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosine.mean() >= 0.99, f"mean cosine {cosine.mean():.4f}"
    assert cosine.min() >= 0.985, f"min cosine {cosine.min():.4f} for {sentences[int(cosine.argmin())]!r}"

"""The inputs every contender gets: the same rows, the same sentences, built once per run.

``digits``: rows of scikit-learn's 8×8 digits. ``minilm``: batch 1 is one sentence of 32 tokens,
batches 8 and 32 are sentences of exactly 128 tokens each (special tokens included; checked with
the artifact's own tokenizer, so no padding and no truncation happen). Each request is available as
an OIP JSON body, an OIP binary-extension body (built by tritonclient, as its users send it), the
tutorial handler's ``{"inputs": ...}`` body, and pre-tokenized tensors for the bare run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from benchmarks.lambda_env import ARTIFACTS

BATCHES = (1, 8, 32)
MINILM_TOKENS = {1: 32, 8: 128, 32: 128}  # sequence length per batch size

_PROSE = (
    "Serverless inference turns a trained model into a function that costs nothing while nobody calls it. "
    "The first request after a quiet hour pays for the cold start: the runtime starts, the libraries are "
    "imported, the model is fetched from object storage and a session is created before any answer leaves. "
    "Warm requests only pay for the work itself, so what matters there is how little the handler adds on top "
    "of the bare inference call. Quantized weights make the artifact smaller and often faster on a CPU, but "
    "every change to the numbers must be checked against the original model on real sentences. A queue of "
    "small requests can be scored in micro-batches, which amortizes the fixed cost of each call across many "
    "records. Memory decides both the price and the share of processor a function receives, and the package "
    "must fit within the unzipped limit of the platform. Engineers who deploy embedding models usually start "
    "from a tutorial that downloads the model at import, creates a session with the default options and "
    "returns the predictions as JSON. Others keep the original framework and serve the checkpoint eagerly, "
    "which is simple but heavy. The library in this repository tries to make the careful path the easy one: "
    "a manifest pins every file, a checksum guards every byte, and the session is sized to the processor the "
    "function really has. Benchmarks on a shared machine are noisy, so every comparison here is made in the "
    "same run, in alternating rounds, and reported as medians with their ratios."
)


@dataclass(frozen=True)
class Workload:
    """One model at one batch size, in every form a contender takes it."""

    model: str
    batch: int
    tokens: int | None  # minilm: tokens per sentence
    oip_json: bytes
    oip_binary: bytes
    oip_binary_header_length: int
    tutorial_json: bytes
    feeds: dict[str, np.ndarray]  # what the bare session.run gets
    texts: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"b{self.batch}×{self.tokens}" if self.tokens else f"b{self.batch}"


@cache
def _tokenizer() -> Any:
    """The artifact's tokenizer, set up as onnxfn's text-embedding pipeline sets it up."""
    from tokenizers import Tokenizer

    manifest = json.loads((ARTIFACTS / "minilm" / "manifest.json").read_text())
    tokenizer = Tokenizer.from_file(str(ARTIFACTS / "minilm" / manifest["pipeline"]["tokenizer"]))
    tokenizer.enable_truncation(max_length=manifest["pipeline"]["max_length"])
    tokenizer.enable_padding()
    return tokenizer


def _count(text: str) -> int:
    return len(_tokenizer().encode(text).ids)


def sentence_of(tokens: int, start: int) -> str:
    """A sentence of exactly ``tokens`` tokens ([CLS] and [SEP] included), from the prose at word ``start``."""
    words = _PROSE.split()
    chosen: list[str] = []
    index = start
    while _count(" ".join(chosen)) < tokens:
        chosen.append(words[index % len(words)])
        index += 1
    while _count(" ".join(chosen)) > tokens:
        chosen.pop()
    for filler in ("and", "the", "of", "a"):
        while _count(" ".join([*chosen, filler])) <= tokens:
            chosen.append(filler)
    text = " ".join(chosen)
    if _count(text) != tokens:
        raise ValueError(f"could not build a sentence of {tokens} tokens (got {_count(text)})")
    return text


def minilm_texts(batch: int, tokens: int) -> list[str]:
    return [sentence_of(tokens, start=17 * i) for i in range(batch)]


def digits_rows(batch: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    data = load_digits().data.astype(np.float32)
    return np.ascontiguousarray(data[np.arange(batch) % len(data)])


def _oip_binary(name: str, datatype: str, value: np.ndarray, outputs: list[str]) -> tuple[bytes, int]:
    """An OIP binary-extension body as tritonclient builds it (binary input, binary outputs)."""
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput(name, list(value.shape), datatype)
    tensor.set_data_from_numpy(value, binary_data=True)
    requested = [httpclient.InferRequestedOutput(output, binary_data=True) for output in outputs]
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor], outputs=requested)
    return bytes(body), int(json_size or 0)


def workload(model: str, batch: int) -> Workload:
    """The request of ``batch`` rows (or sentences) for ``model`` in every encoding."""
    if model == "digits":
        rows = digits_rows(batch)
        oip = {"inputs": [{"name": "pixels", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}]}
        binary, header = _oip_binary("pixels", "FP32", rows, ["label", "label_name", "probabilities"])
        tutorial = {"inputs": rows.tolist()}
        return Workload(model, batch, None, _dumps(oip), binary, header, _dumps(tutorial), {"pixels": rows})
    tokens = MINILM_TOKENS[batch]
    texts = minilm_texts(batch, tokens)
    oip = {"inputs": [{"name": "text", "shape": [batch], "datatype": "BYTES", "data": texts}]}
    encoded = np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
    binary, header = _oip_binary("text", "BYTES", encoded, ["embedding"])
    tutorial = {"inputs": texts}
    return Workload(
        model, batch, tokens, _dumps(oip), binary, header, _dumps(tutorial), tokenize(texts), texts=tuple(texts)
    )


def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
    """Pre-tokenized feeds for the bare run (the handler and the tutorial tokenize inside)."""
    encodings = _tokenizer().encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _dumps(document: Any) -> bytes:
    return json.dumps(document).encode("utf-8")


def json_event(path: str, body: bytes) -> dict[str, Any]:
    """The API Gateway REST proxy event of a JSON POST to ``path``."""
    from onnxfn.local.events import api_gateway_event

    return api_gateway_event("POST", path, body, {"Content-Type": "application/json"})


def binary_event(path: str, body: bytes, header_length: int) -> dict[str, Any]:
    """The event of an OIP binary request: API Gateway base64-encodes the binary media type."""
    from onnxfn.local.events import api_gateway_event

    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)}
    return api_gateway_event("POST", path, body, headers)


def infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"

"""The common tutorial Lambda handler for an ONNX model, as blog posts and samples write it.

At import: ``boto3.client("s3").download_file(...)`` of the model (and, for a text model, its
``tokenizer.json``) into the temp dir, ``onnxruntime.InferenceSession(path)`` with default
options. Per request: ``json.loads(event["body"])``, ``np.array(..., dtype=float32)`` (or tokenize,
mean-pool and normalize for a text embedder, as onnxfn's ``text-embedding`` pipeline does),
``session.run`` and ``json.dumps({"predictions": ...})``.

The bench gives it the same S3 objects onnxfn serves (``TUTORIAL_BUCKET``, ``TUTORIAL_MODEL_KEY``,
``TUTORIAL_TOKENIZER_KEY``) and a private ``TMPDIR`` per run (Lambda's ``/tmp``). Two things are not
in a tutorial: ``INIT_MARKS`` (timestamps, so the bench can split the init; they do no work) and the
tokenizer's truncation/padding set as onnxfn sets them (256 tokens, pad to the longest), so both
do the same work: the file's own setting pads every request to 128 tokens.
"""

from __future__ import annotations

import time

INIT_MARKS = {"start": time.perf_counter()}

import json  # noqa: E402 - the marks above time these imports
import os  # noqa: E402
import tempfile  # noqa: E402
from typing import Any  # noqa: E402

import boto3  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

INIT_MARKS["imported"] = time.perf_counter()

BUCKET = os.environ["TUTORIAL_BUCKET"]
MODEL_KEY = os.environ["TUTORIAL_MODEL_KEY"]
TOKENIZER_KEY = os.environ.get("TUTORIAL_TOKENIZER_KEY")
MODEL_PATH = os.path.join(tempfile.gettempdir(), "model.onnx")  # "/tmp/model.onnx" in Lambda
TOKENIZER_PATH = os.path.join(tempfile.gettempdir(), "tokenizer.json")

s3 = boto3.client("s3")
s3.download_file(BUCKET, MODEL_KEY, MODEL_PATH)
if TOKENIZER_KEY:
    s3.download_file(BUCKET, TOKENIZER_KEY, TOKENIZER_PATH)
INIT_MARKS["downloaded"] = time.perf_counter()

session = onnxruntime.InferenceSession(MODEL_PATH)
input_name = session.get_inputs()[0].name
tokenizer = None
if TOKENIZER_KEY:
    tokenizer = Tokenizer.from_file(TOKENIZER_PATH)
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding()
INIT_MARKS["ready"] = time.perf_counter()


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = json.loads(event["body"])
    if tokenizer is None:
        inputs = np.array(body["inputs"], dtype=np.float32)
        outputs = session.run(None, {input_name: inputs})
        predictions = [output.tolist() for output in outputs]
    else:
        encodings = tokenizer.encode_batch(body["inputs"])
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        token_embeddings = session.run(None, feeds)[0]
        mask = attention_mask[:, :, None].astype(np.float32)
        embeddings = (token_embeddings * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        predictions = embeddings.tolist()
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"predictions": predictions}),
    }

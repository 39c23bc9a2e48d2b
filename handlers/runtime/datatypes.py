"""Open Inference Protocol datatypes and their numpy and ONNX counterparts."""

from __future__ import annotations

import numpy as np

from contract.manifest import OIP_DATATYPES

# OIP datatype -> numpy dtype; BYTES travels as an object array of ``bytes``.
OIP_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
assert tuple(OIP_TO_NUMPY) == OIP_DATATYPES, "a numpy dtype for every datatype of the contract, in its order"

# onnxruntime's NodeArg.type strings -> OIP datatype.
ORT_TO_OIP: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def numpy_to_oip(dtype: np.dtype) -> str:
    """OIP datatype of a numpy dtype; strings and objects are BYTES."""
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    for name, candidate in OIP_TO_NUMPY.items():
        if candidate == dtype:
            return name
    raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")


def itemsize(datatype: str) -> int:
    """Bytes per element in the binary tensor extension; BYTES elements vary (0)."""
    if datatype == "BYTES":
        return 0
    return OIP_TO_NUMPY[datatype].itemsize

"""The onnxfn release the handlers belong to."""

__version__ = "0.1.0"

"""onnxfn: deploy ONNX models, quantized by default, as AWS Lambda functions."""

from handlers.runtime.version import __version__

__all__ = ["__version__"]

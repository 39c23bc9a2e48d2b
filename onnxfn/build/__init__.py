"""Build-time model conversion: checkpoints to ONNX graphs, and their quantization."""

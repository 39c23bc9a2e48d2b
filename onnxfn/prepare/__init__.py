"""``onnxfn add``: turn a model (ONNX, scikit-learn, PyTorch, BERT checkpoint) into a validated,
quantized, pre-optimized artifact in ``model_artifacts/<name>/``."""

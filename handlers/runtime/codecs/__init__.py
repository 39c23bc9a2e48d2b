"""Wire formats: the Open Inference Protocol (JSON and binary tensors) and TF Serving / KServe V1."""

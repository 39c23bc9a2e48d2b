"""The peers onnxfn is measured against, each written the way its users write it.

- ``bare``: a bare ``onnxruntime.InferenceSession.run`` on the same tensors, the floor.
- ``tutorial_handler``: the common tutorial Lambda handler (download at import, default session).
- ``pytorch_eager``: sentence-transformers on CPU torch, run in its own venv (``pytorch_venv``).
"""

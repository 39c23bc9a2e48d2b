"""The contract between the trees: what the infrastructure (``stacks/``), the code that runs in
Lambda (``handlers/``) and the CLI (``onnxfn/``) must agree on, written once.

- :mod:`contract.environment`: the environment variables a function reads, their modes and defaults;
- :mod:`contract.layout`: where a model's artifact and its data live in S3;
- :mod:`contract.limits`: the Lambda and API Gateway limits the project is held to;
- :mod:`contract.manifest`: the manifest's schema and its parser (OIP datatype names only; the
  handlers map them to numpy).

Standard library only and importing nothing of the project (import-linter checks it), so the
stacks can use it without onnxruntime or numpy, and it ships beside ``handlers/`` in every function.
"""

"""AWS CDK stacks and constructs that deploy onnxfn models."""

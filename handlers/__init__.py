"""Code that runs inside AWS Lambda: entry points and their shared runtime."""

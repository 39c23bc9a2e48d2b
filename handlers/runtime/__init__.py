"""Shared runtime of the Lambda entry points: settings, manifest, model store, codecs, pipelines."""

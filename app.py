#!/usr/bin/env python3
"""The CDK app: config from cdk.json context, one OnnxfnStack, cdk-nag AwsSolutions checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.config import ConfigError, load_config
from stacks.onnxfn_stack import OnnxfnStack

ROOT = Path(__file__).resolve().parent


def cdk_json_context() -> dict[str, object]:
    """The context in cdk.json, for apps built in-process (the CDK CLI passes it itself)."""
    return dict(json.loads((ROOT / "cdk.json").read_text())["context"])


def build_app(overrides: dict[str, object] | None = None, outdir: str | None = None) -> tuple[cdk.App, OnnxfnStack]:
    """The app and its stack. In-process (tests), cdk.json's context is loaded and ``overrides`` win."""
    if overrides is None and outdir is None:
        app = cdk.App()
    else:
        app = cdk.App(context={**cdk_json_context(), **(overrides or {})}, outdir=outdir)
    config = load_config(_with_cli_overrides(app), ROOT)
    stack = OnnxfnStack(
        app,
        str(app.node.try_get_context("onnxfn:stack_name") or "Onnxfn"),
        config=config,
        description="onnxfn: ONNX models as Lambda functions behind the Open Inference Protocol",
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def _with_cli_overrides(app: cdk.App) -> dict[str, object]:
    """``-c onnxfn:architecture=arm64`` / ``-c onnxfn:packaging=image`` set that value for every model;
    ``-c onnxfn:big_batch_rows=N`` sends every model's batch files of N records or more to its state machine."""
    context = dict(app.node.try_get_context("onnxfn") or {})
    forced = {
        key: app.node.try_get_context(f"onnxfn:{key}")
        for key in ("architecture", "packaging", "runtime", "auth")
        if app.node.try_get_context(f"onnxfn:{key}") is not None
    }
    rows = app.node.try_get_context("onnxfn:big_batch_rows")
    if rows is not None:
        defaults = dict(context.get("defaults") or {})
        forced["big_batch"] = {**dict(defaults.get("big_batch") or {}), "rows": int(rows)}
    if forced:
        defaults = {**dict(context.get("defaults") or {}), **forced}
        models = {name: {**dict(value or {}), **forced} for name, value in dict(context.get("models") or {}).items()}
        context.update(defaults=defaults, models=models or None)
    return context


def main() -> int:
    try:
        app, _ = build_app()
    except ConfigError as exc:
        print(f"onnxfn config error: {exc}", file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())

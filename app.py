#!/usr/bin/env python3
"""The CDK app: config from cdk.json context, one OnnxfnStack, cdk-nag AwsSolutions checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

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
    if forced:
        defaults = {**dict(context.get("defaults") or {}), **forced}
        models = {name: {**dict(value or {}), **forced} for name, value in dict(context.get("models") or {}).items()}
        context.update(defaults=defaults, models=models or None)
    rows = app.node.try_get_context("onnxfn:big_batch_rows")
    if rows is not None:
        _force_big_batch_rows(context, rows)
    return context


def _force_big_batch_rows(context: dict[str, Any], rows: object) -> None:
    """Every model's ``big_batch.rows``, its other big_batch settings kept; a model whose big batch is
    off (``"big_batch": false``, its own or the defaults') stays off."""
    try:
        value = int(str(rows))
    except ValueError as exc:
        raise ConfigError(f"onnxfn:big_batch_rows: {rows!r} is not allowed; expected a whole number") from exc
    defaults = dict(context.get("defaults") or {})
    off_by_default = defaults.get("big_batch") is False

    def forced(settings: dict[str, Any], inherit_off: bool) -> dict[str, Any]:
        own = settings.get("big_batch")
        if own is False or (own is None and inherit_off):
            return settings
        return {**settings, "big_batch": {**dict(own or {}), "rows": value}}

    context["defaults"] = forced(defaults, False)
    models = dict(context.get("models") or {})
    if models:
        context["models"] = {name: forced(dict(v or {}), off_by_default) for name, v in models.items()}


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

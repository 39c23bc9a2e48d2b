"""One in-process synth per variant per session (the first synth in a process costs ~4 s)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("CDK_DISABLE_CLI_TELEMETRY", "true")

ROOT = Path(__file__).resolve().parents[2]
QUALIFIER = "onnxfn42"
REPLY_QUEUE = "arn:aws:sqs:us-east-1:123456789012:replies"
REPLY_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "options": {
        "onnxfn": {
            "alarm_email": "ops@example.com",
            "docs": "private",  # /swagger takes the first model's auth: digits, IAM
            "defaults": {"runtime": "python3.12"},
            "models": {
                "digits": {
                    "architecture": "arm64",
                    "snapstart": True,
                    "auth": "iam",
                    "canary": True,
                    "load_mode": "eager",
                    "memory_mb": 512,
                    "big_batch": {
                        "rows": 50000,
                        "bytes": 104857600,
                        "items_per_batch": 500,
                        "max_concurrency": 4,
                        "tolerated_failure_percent": 5,
                    },
                },
                "minilm": {
                    "memory_mb": 3538,
                    "tracing": True,
                    "reserved_concurrency": 10,
                    "provisioned_concurrency": 2,
                    "canary": True,
                    "batch_size": 8,
                    "max_concurrency": 4,
                    "batch_max_concurrency": 3,
                    "reply_queue_arns": [REPLY_QUEUE],
                    "reply_queue_kms_key_arns": [REPLY_KEY],
                    "big_batch": False,
                },
            },
        }
    },
    # Every route signed with IAM: no API key, so the public /swagger's own acknowledgments must hold.
    "iam": {"onnxfn": {"defaults": {"auth": "iam"}}},
    "docs_off": {"onnxfn": {"docs": "off"}},
    # A bootstrap with a qualifier of its own (cdk bootstrap --qualifier, read from this context key).
    "qualifier": {"@aws-cdk/core:bootstrapQualifier": QUALIFIER},
    "arm64": {"onnxfn": {"defaults": {"architecture": "arm64"}}},
    "image": {
        "onnxfn": {
            "models": {
                "digits": {"packaging": "image", "architecture": "arm64"},
                "minilm": {"packaging": "image", "architecture": "x86_64"},
            }
        }
    },
}


@dataclass
class Synth:
    app: Any
    stack: Any
    template: Any  # aws_cdk.assertions.Template of the app: its stack with each model's stack read in
    outdir: Path
    own_template: Any  # the app's stack alone

    def model_template(self, model: str) -> Any:
        """The ``Template`` of one model's nested stack."""
        from aws_cdk.assertions import Template

        return Template.from_stack(self.stack.model_stacks[model])

    @property
    def template_file(self) -> Path:
        return self.outdir / f"{self.stack.stack_name}.template.json"

    @property
    def template_files(self) -> list[Path]:
        """The app's template, then each model's nested template."""
        from onnxfn.local.assembly import nested_templates

        own = json.loads(self.template_file.read_text())
        return [self.template_file, *nested_templates(own, self.outdir).values()]

    def logical_id(self, construct: Any) -> str:
        """The logical id CDK computed for ``construct`` (never written into a test by hand), in its
        own template; the app's ids stay unique across templates, so also in ``template``."""
        from aws_cdk import Stack

        cfn = construct if construct.node.default_child is None else construct.node.default_child
        stack = Stack.of(cfn)
        return str(stack.resolve(stack.get_logical_id(cfn)))


_CACHE: dict[str, Synth] = {}


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Synth]:
    from aws_cdk.assertions import Template

    from app import build_app
    from onnxfn.local.assembly import flatten

    def _synth(variant: str) -> Synth:
        if variant not in _CACHE:
            outdir = tmp_path_factory.mktemp(f"cdk-{variant}")
            # the asset metadata the CDK CLI asks for: where an image function's build context is staged
            context = {**VARIANTS[variant], "aws:cdk:enable-asset-metadata": True}
            app, stack = build_app(context, outdir=str(outdir))
            app.synth()
            own = Template.from_stack(stack)
            flat = Template.from_json(flatten(own.to_json(), outdir))
            _CACHE[variant] = Synth(app, stack, flat, outdir, own)
        return _CACHE[variant]

    return _synth

"""Keeping ``cdk.out`` current: synthesize when a watched source is newer than the assembly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from onnxfn.errors import UserError

DEFAULT_WATCH = ("app.py", "cdk.json", "stacks/**", "handlers/**", "layers/**", "model_artifacts/**")


def watched_files(root: Path) -> list[Path]:
    """The files ``cdk.json``'s ``watch.include`` names (cdk.json itself included)."""
    patterns: list[str] = list(DEFAULT_WATCH)
    config = root / "cdk.json"
    if config.exists():
        patterns = [*json.loads(config.read_text()).get("watch", {}).get("include", patterns), "cdk.json"]
    found: set[Path] = set()
    for pattern in patterns:
        for path in root.glob(pattern):
            if path.is_file() and "__pycache__" not in path.parts:
                found.add(path)
            elif path.is_dir():
                found.update(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return sorted(found)


def stale_reason(root: Path, out_dir: Path) -> str | None:
    """Why the assembly must be synthesized again, or None when it is current."""
    manifest = out_dir / "manifest.json"
    if not manifest.exists():
        return f"no cloud assembly in {out_dir}"
    built = manifest.stat().st_mtime
    newer = [p for p in watched_files(root) if p.stat().st_mtime > built]
    if newer:
        names = ", ".join(str(p.relative_to(root)) for p in newer[:3])
        return f"{len(newer)} source file(s) changed since the last synth ({names}{'…' if len(newer) > 3 else ''})"
    return None


class SynthFailed(UserError):
    """``cdk synth`` failed: its own message (a config error, a missing artifact) says why."""


def synthesize(root: Path, out_dir: Path, context: dict[str, str] | None = None) -> None:
    """Run the pinned CDK CLI (``cdk synth``), or the app itself when node_modules is absent;
    ``context`` values are passed as ``-c key=value``."""
    cli = root / "node_modules" / ".bin" / "cdk"
    env = {**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true", "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    if cli.exists():
        command = [str(cli), "synth", "--quiet", "--no-notices", "--output", str(out_dir)]
        for key, value in (context or {}).items():
            command += ["-c", f"{key}={value}"]
    else:
        command = [sys.executable, "app.py"]
        env["CDK_OUTDIR"] = str(out_dir)
        env["CDK_CONTEXT_JSON"] = json.dumps(context or {})
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise SynthFailed(f"synth failed ({' '.join(command[:2])}, exit {result.returncode}):\n{tail}")
    os.utime(out_dir / "manifest.json")  # mark the assembly current even if nothing changed in it

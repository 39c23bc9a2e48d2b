"""The ``onnxfn`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from handlers.runtime.errors import ManifestError
from onnxfn.artifacts import DEFAULT_ROOT, list_artifacts

console = Console()
err_console = Console(stderr=True)


def _cmd_build_demo(args: argparse.Namespace) -> int:
    from onnxfn.build import demo_models

    names = demo_models.NAMES if args.model == "all" else (args.model,)
    for name in names:
        with console.status(f"building {name}…"):
            manifest, seconds = demo_models.build(name, Path(args.root))
        console.print(f"[green]built[/] {manifest.name} v{manifest.version} in {seconds:.1f} s → {args.root}/{name}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    table = Table(title=f"models in {args.root}")
    for column in ("name", "version", "pipeline", "inputs", "outputs", "MB", "quantization"):
        table.add_column(column)
    for manifest in list_artifacts(Path(args.root)):
        size = sum(f.bytes for f in manifest.files) / 1e6
        table.add_row(
            manifest.name,
            manifest.version,
            manifest.pipeline.kind if manifest.pipeline else "raw",
            ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in manifest.inputs),
            ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in manifest.outputs),
            f"{size:.2f}",
            str((manifest.quantization or {}).get("method", "-")),
        )
    console.print(table)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    path = Path(args.root) / args.name / "manifest.json"
    if not path.exists():
        err_console.print(f"[red]error:[/] no model {args.name!r} in {args.root} (no {path})")
        return 2
    console.print_json(path.read_text())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from onnxfn.demo import run_demo

    return run_demo(Path(args.root), console)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnxfn", description="Deploy ONNX models as AWS Lambda functions.")
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="artifact folder (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build-demo", help="build the demo models (digits, minilm) from pinned packages")
    build.add_argument("model", nargs="?", default="all", choices=("all", "digits", "minilm"))
    build.set_defaults(func=_cmd_build_demo)

    sub.add_parser("list", help="list the models in the artifact folder").set_defaults(func=_cmd_list)
    show = sub.add_parser("show", help="print one model's manifest")
    show.add_argument("name")
    show.set_defaults(func=_cmd_show)

    sub.add_parser("demo", help="serve both demo models in-process against moto and print results").set_defaults(
        func=_cmd_demo
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ManifestError, FileNotFoundError, FileExistsError, ValueError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

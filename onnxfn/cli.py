"""The ``onnxfn`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from handlers.runtime.errors import OnnxfnError
from onnxfn.artifacts import DEFAULT_ROOT, list_artifacts
from onnxfn.errors import UserError
from onnxfn.local.commands import add_parsers, add_runtime_arguments

# Off a terminal (CI, a log file) rich would wrap at 80 columns: log lines stay whole, tables get room.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, soft_wrap=True)


def _cmd_build_demo(args: argparse.Namespace) -> int:
    from onnxfn import demo_models

    names = demo_models.NAMES if args.model == "all" else (args.model,)
    for name in names:
        with console.status(f"building {name}…"):
            manifest, seconds = demo_models.build(name, Path(args.root))
        console.print(f"[green]built[/] {manifest.name} v{manifest.version} in {seconds:.1f} s → {args.root}/{name}")
    return 0


def quantization_words(quantization: Mapping[str, Any] | None) -> str:
    """What quantization did, in a few words: the method and how many nodes it changed, or why none."""
    facts = dict(quantization or {})
    method = str(facts.get("method", "-"))
    if method == "none":
        return f"none ({facts['reason']})" if facts.get("reason") else "none"
    nodes = facts.get("quantized_nodes")
    if nodes == 0:
        return f"{method}: 0 nodes ({facts.get('reason', 'nothing it quantizes')})"
    return f"{method}: {nodes} nodes" if nodes is not None else method


def _cmd_list(args: argparse.Namespace) -> int:
    from onnxfn.app_models import AppConfigError, find_app

    try:
        app, _ = find_app(Path(args.root))
    except AppConfigError:
        app = None
    table = Table(title=f"models in {args.root}")
    for column in ("name", "version", "pipeline", "inputs", "outputs", "MB", "quantization", "deployed"):
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
            quantization_words(manifest.quantization),
            "–" if app is None else ("yes" if app.deploys(manifest.name) else "no: not in cdk.json"),
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


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace("x", ",").split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,64, got {text!r}") from exc


def _add_options(args: argparse.Namespace) -> Any:
    """``onnxfn add``'s flags as ``AddOptions``."""
    from onnxfn.prepare.add import AddOptions
    from onnxfn.prepare.layout import parse_batch_axes
    from onnxfn.prepare.validation import Thresholds

    return AddOptions(
        quantize=args.quantize,
        optimize=args.optimize,
        calibration=Path(args.calibration) if args.calibration else None,
        samples=Path(args.samples) if args.samples else None,
        thresholds=Thresholds(
            min_top1_agreement=args.min_top1,
            max_probability_diff=args.max_prob_diff,
            min_cosine_mean=args.min_cosine_mean,
            min_cosine_min=args.min_cosine_min,
            max_abs_error=args.max_abs_error if args.max_abs_error is not None else float("inf"),
            max_rel_error=args.max_rel_error,
        ),
        trust_pickle=args.trust_pickle,
        input_name=args.input_name,
        input_shape=args.input_shape,
        labels=[x.strip() for x in args.labels.split(",")] if args.labels else None,
        module_path=Path(args.module_path) if args.module_path else None,
        pipeline=Path(args.pipeline) if args.pipeline else None,
        exclude_nodes=[x.strip() for x in args.exclude_nodes.split(",")] if args.exclude_nodes else [],
        prune=args.prune,
        prune_heads=args.prune_heads,
        block={
            key: getattr(args, key)
            for key in ("bits", "block_size", "accuracy_level", "embeddings")
            if getattr(args, key) is not None
        },
        version=args.version,
        description=args.description,
        max_batch=args.max_batch,
        batch_sizes=tuple(args.batch_sizes) if args.batch_sizes else None,
        batch_axes=parse_batch_axes(args.batch_axis),
        packaging=args.packaging,
        force=args.force,
    )


class _Steps:
    """Progress of a long command: a live line on a terminal; elsewhere (CI, a log file) one plain line
    per step, with the seconds since the start, so a log never sits silent."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Steps:
        if console.is_terminal:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
            self._bar = Progress(*columns, console=console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task("starting", total=None)
        return self

    def __call__(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=text)
        else:
            console.print(f"{self.label}: {text} ({time.perf_counter() - self.started:.1f} s)", highlight=False)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _steps(label: str) -> _Steps:
    return _Steps(label)


def _cmd_add(args: argparse.Namespace) -> int:
    from onnxfn.prepare.add import add_model
    from onnxfn.prepare.calibration import CalibrationError
    from onnxfn.prepare.gate import GateFailed
    from onnxfn.prepare.quantization import QuantizationError
    from onnxfn.prepare.report import summary_table
    from onnxfn.prepare.sources import SourceError

    options = _add_options(args)
    with _steps(f"onnxfn add {args.name}") as step:
        try:
            result = add_model(Path(args.source), args.name, options, root=Path(args.root), step=step, progress=step)
        except GateFailed as failed:
            step.stop()
            console.print(summary_table(failed.report, name=args.name))
            err_console.print(f"[red]error:[/] validation gate failed, nothing written: {failed}")
            return 1
        except (SourceError, QuantizationError, CalibrationError, FileExistsError) as exc:
            step.stop()
            err_console.print(f"[red]error:[/] {exc}")
            return 2
    console.print(summary_table(result.report, name=args.name))
    fit = result.lambda_fit
    console.print(
        f"[green]wrote[/] {result.path} — {fit['artifact_mb']} MB; peak RSS {fit['peak_rss_mb']} MB → "
        f"memory_mb {fit['recommended_memory_mb']}; layer: {fit['package_budget']}; report {result.path / 'report.md'}"
    )
    for warning in fit["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
    _register(args, int(fit["recommended_memory_mb"]))
    if not args.no_fit:
        _measure_fit(result.path)
    return 0


def _register(args: argparse.Namespace, recommended_mb: int) -> None:
    """Make the app deploy the new model (cdk.json), or say plainly why it will not."""
    from onnxfn.app_models import AppConfigError, find_app, register

    try:
        app, why = find_app(Path(args.root), Path(args.cdk_json) if args.cdk_json else None)
        if app is None:
            console.print(f"[yellow]not deployed yet:[/] {why}", highlight=False)
            return
        console.print(f"[green]{register(app, args.name, recommended_mb, args.memory_mb)}[/]", highlight=False)
    except AppConfigError as exc:
        console.print(f"[yellow]not deployed yet:[/] {exc}", highlight=False)


def _cmd_remove(args: argparse.Namespace) -> int:
    """Stop deploying a model and delete its artifact (atomically: renamed aside, then removed)."""
    import shutil

    from onnxfn.app_models import find_app, unregister

    folder = Path(args.root) / args.name
    app, why = find_app(Path(args.root), Path(args.cdk_json) if args.cdk_json else None)
    if not folder.exists() and (app is None or args.name not in (app.models() or {})):
        raise UserError(f"no model {args.name!r}: no {folder} and the app does not list it")
    console.print(unregister(app, args.name) if app else f"not registered anywhere: {why}", highlight=False)
    if folder.exists() and not args.keep_artifact:
        retired = folder.with_name(f".{folder.name}.removed")
        shutil.rmtree(retired, ignore_errors=True)
        folder.rename(retired)
        shutil.rmtree(retired)
        console.print(f"deleted {folder}", highlight=False)
    return 0


def _measure_fit(artifact: Path) -> None:
    """The new model run as Lambda runs it, at four memory sizes (skipped, with a warning, when the
    runtime's interpreter is missing: the artifact is written either way)."""
    from onnxfn.local.fit import measure
    from onnxfn.local.runtime import RuntimeUnavailable

    try:
        with console.status("measuring the Lambda fit…") as status:
            fit = measure(artifact, cold_runs=1, warm_runs=5, progress=status.update)
    except RuntimeUnavailable as exc:
        err_console.print(f"[yellow]warning:[/] Lambda fit not measured: {exc}")
        return
    console.print(fit.table())
    console.print(f"`onnxfn fit {fit.model}` measures again with more runs", highlight=False)


def _cmd_demo(args: argparse.Namespace) -> int:
    from onnxfn.demo import run_demo
    from onnxfn.local.commands import runtime_options

    return run_demo(Path(args.root), console, Path(args.app), runtime_options(args))


def _add_parser(sub: Any) -> None:
    """``onnxfn add`` and its flags."""
    add = sub.add_parser("add", help="convert, quantize, pre-optimize and validate a model into model_artifacts/NAME")
    add.add_argument("source", help="an .onnx file, a scikit-learn/PyTorch pickle, or a BERT checkpoint folder")
    add.add_argument("--name", required=True)
    add.add_argument("--version", default="1")
    add.add_argument("--description", help="the manifest's description (default: names the source)")
    add.add_argument("--max-batch", type=int, help="rows a request may carry (default 64); sizes memory too")
    add.add_argument("--memory-mb", type=int, help="the function's memory (default: the size add recommends)")
    add.add_argument(
        "--batch-sizes",
        type=_ints,
        help="batch sizes latency is measured at, e.g. 1,4 (default 1,8,32, or the model's fixed batch)",
    )
    add.add_argument(
        "--batch-axis",
        default="",
        help="where a tensor counts rows when the graph does not say: NAME=AXIS or NAME=none, e.g. state=1,sr=none",
    )
    add.add_argument("--cdk-json", help="the app to register the model in (default: ./cdk.json)")
    add.add_argument(
        "--quantize",
        default="auto",
        choices=("auto", "dynamic", "static", "blockwise", "fp16", "none"),
        help="auto (default): 8-bit weight blocks for BERT checkpoints, dynamic int8 for other MatMul weights, "
        "static QDQ int8 for Conv/Gemm, none when nothing fits",
    )
    add.add_argument(
        "--prune",
        type=float,
        help="remove this fraction (0-1) of every feed-forward block's neurons, ranked on --calibration or the "
        "validation samples, before quantizing",
    )
    add.add_argument(
        "--prune-heads",
        type=float,
        help="remove this fraction (0-1) of every attention block's heads (BERT-style graphs), ranked as --prune ranks",
    )
    add.add_argument("--bits", type=int, help="blockwise: 4 or 8 bits a weight (default 8)")
    add.add_argument("--block-size", type=int, help="blockwise: weights sharing one scale, a power of two ≥ 16 (128)")
    add.add_argument(
        "--accuracy-level", type=int, help="blockwise: 4 int8 activations per block (default), 1 fp32, 0 the kernel's"
    )
    add.add_argument("--embeddings", help="blockwise: embedding tables as int8 rows (default), int4 blocks, or fp32")
    add.add_argument(
        "--calibration",
        help="calibration set for --quantize static and for ranking --prune's neurons: .npy, .jsonl or text lines",
    )
    add.add_argument("--samples", help="validation samples (.npy, .jsonl or text lines); default: generated")
    add.add_argument(
        "--optimize",
        default="extended",
        choices=("basic", "extended", "none"),
        help="save onnxruntime's optimized graph at this level (default: %(default)s)",
    )
    add.add_argument("--exclude-nodes", help="comma-separated node names to keep in float")
    add.add_argument("--trust-pickle", action="store_true", help="allow loading pickle/joblib/torch files")
    add.add_argument("--input-name", help="the input's name for scikit-learn models (default: input)")
    add.add_argument("--input-shape", type=_ints, help="example input shape for PyTorch modules, e.g. 1,64")
    add.add_argument(
        "--pipeline",
        help="pre/post-processing around the model: a pipeline .json (image-classification, image-detection, "
        "custom) or a custom pipeline .py (docs/add.md)",
    )
    add.add_argument(
        "--module-path", help="the .py file defining the classes a pickle refers to (a class from the training script)"
    )
    add.add_argument("--labels", help="comma-separated class names (PyTorch classifiers)")
    add.add_argument("--packaging", default="zip", choices=("zip", "image"))
    add.add_argument("--force", action="store_true", help="replace an existing artifact")
    add.add_argument(
        "--no-fit", action="store_true", help="skip measuring cold start, latency and cost at four memory sizes"
    )
    add.add_argument("--min-top1", type=float, default=0.99, help="classifiers: minimum top-1 agreement")
    add.add_argument("--max-prob-diff", type=float, default=0.05, help="classifiers: maximum probability diff")
    add.add_argument("--min-cosine-mean", type=float, default=0.99, help="embedders: minimum mean cosine")
    add.add_argument("--min-cosine-min", type=float, default=0.985, help="embedders: minimum cosine")
    add.add_argument("--max-abs-error", type=float, help="other models: maximum absolute error (default: off)")
    add.add_argument("--max-rel-error", type=float, default=0.05, help="other models: maximum relative error")
    add.set_defaults(func=_cmd_add)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnxfn", description="Deploy ONNX models as AWS Lambda functions.")
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="artifact folder (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build-demo", help="build the demo models (digits, minilm) from pinned packages")
    build.add_argument("model", nargs="?", default="all", choices=("all", "digits", "minilm"))
    build.set_defaults(func=_cmd_build_demo)

    _add_parser(sub)

    remove = sub.add_parser("remove", help="stop deploying a model (cdk.json) and delete its artifact")
    remove.add_argument("name")
    remove.add_argument("--cdk-json", help="the app the model is registered in (default: ./cdk.json)")
    remove.add_argument("--keep-artifact", action="store_true", help="only unregister; keep model_artifacts/NAME")
    remove.set_defaults(func=_cmd_remove)

    sub.add_parser("list", help="list the models in the artifact folder").set_defaults(func=_cmd_list)
    show = sub.add_parser("show", help="print one model's manifest")
    show.add_argument("name")
    show.set_defaults(func=_cmd_show)

    demo = sub.add_parser(
        "demo", help="start the app locally, send requests, a batch file and a queue message; print results"
    )
    demo.add_argument("--app", default="cdk.out", help="cloud assembly (synthesized when stale; default: %(default)s)")
    add_runtime_arguments(demo)
    demo.set_defaults(func=_cmd_demo)
    add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; a failure the user can fix is one line and exit 2, anything else a traceback (a bug)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (UserError, OnnxfnError) as exc:  # OnnxfnError: the handlers' and the local app's own errors
        err_console.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

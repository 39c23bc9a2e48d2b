"""``onnxfn serve`` and ``onnxfn invoke``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from onnxfn.errors import UserError
from onnxfn.local.runtime import RuntimeOptions
from onnxfn.local.serve import DEFAULT_STATE_FILE

# Off a terminal (CI, a log file) rich would wrap at 80 columns: log lines stay whole, tables get room.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, soft_wrap=True)


def _ensure_assembly(app_dir: Path, synth: str) -> None:
    from onnxfn.local.synth import stale_reason, synthesize

    reason = "--synth always" if synth == "always" else stale_reason(Path.cwd(), app_dir) if synth == "auto" else None
    if reason is None:
        return
    started = time.perf_counter()
    with console.status(f"cdk synth ({reason})…"):
        synthesize(Path.cwd(), app_dir)
    console.print(f"synthesized {app_dir} in {time.perf_counter() - started:.1f} s ({reason})")


def print_undeployed(root: Path) -> None:
    """Name every artifact the app leaves out, and why (read from ``cdk.json`` as the stack reads it)."""
    import json

    from stacks.config import undeployed

    config = root / "cdk.json"
    if not config.exists():
        return
    context = json.loads(config.read_text()).get("context", {}).get("onnxfn")
    for folder, reason in undeployed(context if isinstance(context, dict) else None, root):
        err_console.print(f"[yellow]not deployed:[/] {folder}: {reason}", highlight=False)


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """How functions run locally: faithfully (the default) or on the development venv."""
    group = parser.add_argument_group("function runtime (default: as Lambda runs the deployed function)")
    group.add_argument(
        "--python", help="interpreter for functions of its version (default: found on PATH, in pyenv or by uv)"
    )
    group.add_argument(
        "--dev-runtime",
        action="store_true",
        help="run functions on this venv's Python and packages: NOT what deploys (no layer, other interpreter)",
    )
    group.add_argument(
        "--no-init-burst", action="store_true", help="hold init to the memory's CPU share too (default: unthrottled)"
    )
    group.add_argument("--no-cpu-share", action="store_true", help="do not hold invocations to the memory's CPU share")


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    if args.dev_runtime:
        err_console.print(
            "[bold yellow]warning:[/] --dev-runtime: functions run on this venv's Python and packages, not on "
            "their runtime's interpreter and the built layer; timings and behaviour may differ from Lambda's"
        )
    return RuntimeOptions(
        dev=args.dev_runtime, python=args.python, init_burst=not args.no_init_burst, cpu_share=not args.no_cpu_share
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from onnxfn.local.console import ServeConsole, print_app
    from onnxfn.local.serve import LocalApp, Observers, ServeOptions

    app_dir = Path(args.app)
    _ensure_assembly(app_dir, args.synth)
    print_undeployed(Path.cwd())
    output = ServeConsole(console, verbose=args.verbose)
    options = ServeOptions(
        app_dir=app_dir,
        host=args.host,
        port=args.port,
        concurrency=args.concurrency,
        api_key=args.api_key,
        state_file=Path(args.state_file),
        retry_after_s=args.retry_after,
        integration_timeout_s=args.integration_timeout,
        moto_port=args.aws_port,
        runtime=runtime_options(args),
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    observers = Observers(
        request=output.request,
        invocation=output.invocation,
        batch=output.batch,
        execution=output.execution,
        log=output.log,
    )
    try:
        app = LocalApp(options, observers).start()
    except OSError as exc:
        err_console.print(f"[red]error:[/] cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return 2
    try:
        print_app(console, app)
        console.print(
            f"[green]ready[/] in {app.started_s:.1f} s; state in {args.state_file}; Ctrl-C stops everything",
            highlight=False,
        )
        stop.wait()
    finally:
        with console.status("stopping…"):
            pids = app.worker_pids()
            app.stop()
        console.print(f"stopped {len(pids)} worker process(es), the gateway and the embedded AWS")
    return 0


def _read_data(text: str | None) -> str | None:
    """The text itself, or the file named after ``@``."""
    if text is None:
        return None
    if text.startswith("@"):
        try:
            return Path(text[1:]).read_text()
        except OSError as exc:
            raise UserError(f"{text}: cannot read {text[1:]}: {exc.strerror}") from exc
    return text


def _print_json_or_text(body: bytes) -> None:
    try:
        console.print_json(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        console.print(f"<{len(body)} bytes>")


def cmd_invoke(args: argparse.Namespace) -> int:
    from onnxfn.local.client import connect

    state_file = Path(args.state_file)
    # what the command sends is read (and checked) before any app is started for it
    data = _read_data(getattr(args, "data", None))
    bad = [h for h in getattr(args, "header", None) or [] if ":" not in h]
    if bad:
        raise UserError(f"--header {bad[0]!r}: expected 'Name: value'")
    event: Any = None
    if args.kind == "function":
        try:
            event = json.loads(_read_data(args.event) or "{}")
        except ValueError as exc:
            raise UserError(f"--event: expected a JSON event, got {exc}") from exc
    with connect(state_file, Path(args.app), runtime_options(args)) as client:
        source = "app started for this call" if client.started_here else "running app"
        err_console.print(f"[dim]{source}: {client.state['url']}[/]")
        if args.kind == "api":
            headers = dict(h.split(":", 1) for h in args.header or [])
            reply = client.request(
                args.method.upper(),
                args.path,
                data,
                {k.strip(): v.strip() for k, v in headers.items()},
                api_key=not args.no_key,
            )
            err_console.print(f"HTTP {reply.status} {reply.headers.get('Content-Type', '')}")
            _print_json_or_text(reply.body)
            return 0 if reply.status < 400 else 1
        if args.kind == "file":
            key, versions = client.put_batch_file(args.model, Path(args.file))
            err_console.print(f"put s3://{client.model(args.model)['bucket']}/{key}; waiting for the batch function…")
            summary = _wait_with_progress(client, args.model, key, versions, args.wait)
            if summary is None:
                err_console.print(f"[red]no result within {args.wait} s[/]")
                return 1
            console.print_json(json.dumps(summary))
            return 0 if not summary.get("failed") else 1
        if args.kind == "queue":
            body = data
            if body is None:
                err_console.print("[red]error:[/] --data is required: an inference request (JSON or @file)")
                return 2
            message_id = client.send_message(args.model, body)
            err_console.print(f"sent message {message_id}; waiting for the worker…")
            result = client.wait_for_result(args.model, message_id, timeout_s=args.wait)
            if result is None:
                err_console.print(f"[red]no result within {args.wait} s[/]")
                return 1
            console.print_json(json.dumps(result[1]))
            return 0 if result[0] else 1
        ok, payload = client.invoke_function(args.function, event)
        console.print_json(json.dumps(payload))
        return 0 if ok else 1


def _wait_with_progress(client: Any, model: str, key: str, versions: list[str], wait_s: float) -> Any:
    """The file's summary; while a big file's state machine runs, a progress bar of its batches."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task: Any = None

        def show() -> None:
            nonlocal task
            report = client.execution_progress(key, versions)
            if not report or not report.get("maps"):
                return
            runs = report["maps"]
            batches = sum(m["batches"] for m in runs)
            done = sum(m["done"] + m["failed"] for m in runs)
            detail = f"{sum(m['items'] for m in runs):,} records read, {sum(m['failed'] for m in runs)} batches failed"
            if task is None:
                task = progress.add_task(f"state machine {report['name'][:24]}… batches", total=None, detail="")
            finished = all(m["finished"] for m in runs)
            progress.update(task, completed=done, total=batches if finished or done else None, detail=detail)

        return client.wait_for_batch(model, key, timeout_s=wait_s, on_wait=show, versions=versions)


def cmd_fit(args: argparse.Namespace) -> int:
    from onnxfn.local.fit import measure

    artifact = Path(args.root) / args.name
    if not (artifact / "manifest.json").exists():
        err_console.print(f"[red]error:[/] no model {args.name!r} in {args.root} (onnxfn list shows the models)")
        return 2
    with console.status("measuring…") as status:
        fit = measure(
            artifact,
            runtime=args.runtime,
            memory_sizes=tuple(args.memory),
            cold_runs=args.cold_runs,
            warm_runs=args.warm_runs,
            batch=args.batch,
            options=runtime_options(args),
            progress=status.update,
        )
    if args.json:
        print(fit.to_json())
        return 0
    console.print(fit.table())
    cpu = fit.rows[0].cpu.split(" ", 2)[2] if fit.rows else ""
    console.print(
        f"{fit.interpreter}; CPU {cpu}; medians of {args.cold_runs} cold start(s) per size, "
        f"{args.warm_runs} warm requests each",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def _memory_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated MB like 512,1769, got {text!r}") from exc
    if not sizes or any(size < 128 or size > 10240 for size in sizes):
        raise argparse.ArgumentTypeError(f"expected memory sizes from 128 to 10240 MB, got {text!r}")
    return sizes


def add_parsers(sub: Any) -> None:
    serve = sub.add_parser(
        "serve", help="run the synthesized app locally: embedded AWS (moto), API Gateway, workers, queues"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--concurrency", type=int, default=2, help="workers per function (default: %(default)s)")
    serve.add_argument("--api-key", help="the API key to accept (default: a new random one, printed)")
    serve.add_argument("--state-file", default=str(DEFAULT_STATE_FILE), help="default: %(default)s")
    serve.add_argument("--app", default="cdk.out", help="cloud assembly folder (default: %(default)s)")
    serve.add_argument("--synth", default="auto", choices=("auto", "always", "never"), help="auto: when stale")
    serve.add_argument("--aws-port", type=int, default=0, help="port of the embedded AWS (default: a free one)")
    serve.add_argument(
        "--retry-after", type=float, help="seconds before a failed queue message is retried (default: the queue's)"
    )
    serve.add_argument("--integration-timeout", type=float, default=29.0, help="API Gateway's, in s (default: 29)")
    serve.add_argument("--verbose", "-v", action="store_true", help="print every function log line")
    add_runtime_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    fit = sub.add_parser(
        "fit", help="measure a model as Lambda runs it: cold start, warm latency and cost at several memory sizes"
    )
    fit.add_argument("name", help="a model in the artifact folder")
    fit.add_argument("--runtime", default="python3.12", choices=("python3.12", "python3.13"))
    fit.add_argument(
        "--memory", type=_memory_sizes, default=[512, 1024, 1769, 3008], help="default: 512,1024,1769,3008"
    )
    fit.add_argument("--cold-runs", type=int, default=3, help="fresh environments per size (default: %(default)s)")
    fit.add_argument("--warm-runs", type=int, default=10, help="warm requests per environment (default: %(default)s)")
    fit.add_argument("--batch", type=int, default=1, help="items per request; text: ~100-token paragraphs above 1")
    fit.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_runtime_arguments(fit)
    fit.set_defaults(func=cmd_fit)

    invoke = sub.add_parser("invoke", help="send one event to the running app (or to one started for the call)")
    invoke.add_argument("--state-file", default=str(DEFAULT_STATE_FILE))
    invoke.add_argument("--app", default="cdk.out", help="cloud assembly used when no app runs")
    add_runtime_arguments(invoke)
    kinds = invoke.add_subparsers(dest="kind", required=True)
    api = kinds.add_parser("api", help="an HTTP request through the local API Gateway")
    api.add_argument("method")
    api.add_argument("path", help="e.g. /v2/models/digits")
    api.add_argument("--data", "-d", help="request body, or @file")
    api.add_argument("--header", "-H", action="append", help="'Name: value' (repeatable)")
    api.add_argument("--no-key", action="store_true", help="do not send the API key")
    file = kinds.add_parser("file", help="put a batch file into a model's inbox and wait for the result")
    file.add_argument("model")
    file.add_argument("file")
    file.add_argument("--wait", type=float, default=120.0)
    queue = kinds.add_parser("queue", help="queue one inference request and wait for its result")
    queue.add_argument("model")
    queue.add_argument("--data", "-d", help="the message body (an inference request), or @file")
    queue.add_argument("--wait", type=float, default=60.0)
    function = kinds.add_parser("function", help="invoke a function directly with an event (Lambda Invoke)")
    function.add_argument("function", help="function name (see `onnxfn serve`'s table)")
    function.add_argument("--event", "-e", help="the event JSON, or @file (default: {})")
    invoke.set_defaults(func=cmd_invoke)

"""Build the Lambda layer that carries ``layers/requirements.txt`` for one Python version and architecture.

The CDK app runs this file by path, as a subprocess, at synth time::

    python layers/build.py --python-version 3.12 --arch arm64 --print-json

and reads one JSON object from the last line of stdout. Everything else (progress, warnings) goes
to stderr. The layer is installed from manylinux wheels for the target (never compiled here),
stripped of what never runs in Lambda, and cached under ``.cache/layers/`` keyed by a hash of the
requirements, the target and the strip rules; a cache entry appears only complete (it is built
beside its final place and renamed into it). ``--measure PATH...`` prints the unzipped size of
directories, for Lambda's 250 MB budget of function code plus layers.

Standard library only: the CDK app must not need the layer's packages to build the layer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import interpreters  # layers/interpreters.py: this script runs by path, so its folder is on sys.path
from strip import STRIP_RULES, STRIP_RULES_VERSION, DirectorySize, measure, strip
from wheels import (
    ARCHITECTURES,
    LAMBDA_PYTHON_GLIBC,
    PipError,
    installed_packages,
    pip_install,
    platform_tags,
    required_glibc,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REQUIREMENTS = REPO_ROOT / "layers" / "requirements.txt"
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "layers"
MARKER = "onnxfn-layer.json"  # written last, at the layer root; lands in /opt as the layer's provenance


class UsageError(Exception):
    """A flag has a value this script cannot use (exit status 2)."""


@dataclass(frozen=True)
class LayerBuild:
    """A built (or reused) layer; ``path`` is the folder that contains ``python/``."""

    path: str
    arch: str
    python_version: str
    bytes: int
    files: int
    cached: bool
    hash: str
    bytes_before_strip: int
    requires_glibc: str | None
    lambda_compatible: bool
    bytecode: str | None  # the interpreter version that compiled the layer, or None (no bytecode)


# --- checks and keys ------------------------------------------------------------------------------


def check_arch(arch: str) -> str:
    """The Lambda architecture name, or a UsageError naming the flag and what is allowed."""
    if arch not in ARCHITECTURES:
        raise UsageError(f"--arch: expected one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    return arch


def check_python_version(version: str) -> str:
    """``3.12`` (``python3.12``, a Lambda runtime name, is accepted too) for a Lambda Python runtime."""
    normalized = version.strip().removeprefix("python")
    if normalized not in LAMBDA_PYTHON_GLIBC:
        allowed = ", ".join(LAMBDA_PYTHON_GLIBC)
        raise UsageError(f"--python-version: expected one of {allowed} (Lambda's Python runtimes), got {version!r}")
    return normalized


def cache_hash(requirements: bytes, python_version: str, arch: str, bytecode: bool = True) -> str:
    """12 hex digits naming a cache entry: what was asked for, how it is stripped, whether compiled."""
    key = {
        "bytecode": bytecode,
        "requirements_sha256": hashlib.sha256(requirements).hexdigest(),
        "python_version": python_version,
        "arch": arch,
        "platforms": platform_tags(arch),
        "strip_rules_version": STRIP_RULES_VERSION,
        "strip_rules": STRIP_RULES,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KB"


# --- cache ----------------------------------------------------------------------------------------


def _read_marker(root: Path, digest: str) -> dict[str, Any] | None:
    """The completion record of a cache entry, if the entry is complete and is the one asked for."""
    try:
        record: dict[str, Any] = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("hash") == digest and (root / "python").is_dir() else None


def _discard(path: Path) -> None:
    """Remove a directory by first renaming it aside, so no one sees it half-deleted."""
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".discard", dir=path.parent))
    path.rename(aside / path.name)
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_staging(cache_dir: Path, name: str, older_than_s: float = 3 * 3600) -> None:
    """Staging folders of builds that were killed (a build takes about a minute)."""
    for leftover in cache_dir.glob(f".{name}.*"):
        if time.time() - leftover.stat().st_mtime > older_than_s:
            shutil.rmtree(leftover, ignore_errors=True)


def _result(root: Path, record: dict[str, Any], *, cached: bool) -> LayerBuild:
    size = measure(root)
    glibc = record.get("requires_glibc")
    return LayerBuild(
        path=str(root),
        arch=record["arch"],
        python_version=record["python_version"],
        bytes=size.bytes,
        files=size.files,
        cached=cached,
        hash=record["hash"],
        bytes_before_strip=int(record["python_bytes_before_strip"]),
        requires_glibc=glibc,
        lambda_compatible=record["lambda_compatible"],
        bytecode=(record.get("bytecode") or {}).get("python"),
    )


def _compiler(python_version: str, log: Callable[[str], None]) -> interpreters.Interpreter | None:
    """The runtime's interpreter, to compile the layer with; None (and a loud warning) when absent."""
    try:
        return interpreters.find(python_version)
    except interpreters.InterpreterNotFound as exc:
        log(f"warning: the layer is built WITHOUT bytecode, so every cold start compiles it: {exc}")
        return None


def _install(
    python_dir: Path, requirements: Path, python_version: str, arch: str, compiler: interpreters.Interpreter | None
) -> tuple[dict[str, Any], tuple[DirectorySize, DirectorySize, DirectorySize], dict[str, DirectorySize]]:
    """Install, strip and compile into ``python_dir``: the marker's facts, the sizes (installed,
    stripped, with bytecode) and what each strip rule removed."""
    python_dir.mkdir()  # exists even when the requirements install nothing
    pip_install(requirements, python_dir, python_version, arch)
    before = measure(python_dir)
    removed = strip(python_dir)
    stripped_size = measure(python_dir)
    if compiler is not None:
        interpreters.compile_tree(compiler, python_dir)
    after = measure(python_dir)
    glibc = required_glibc(python_dir)
    record = {
        "arch": arch,
        "python_version": python_version,
        "platforms": platform_tags(arch),
        "strip_rules_version": STRIP_RULES_VERSION,
        "python_bytes_before_strip": before.bytes,
        "python_files_before_strip": before.files,
        "python_bytes": after.bytes,
        "python_files": after.files,
        "bytecode": None
        if compiler is None
        else {"python": compiler.version, "bytes": after.bytes - stripped_size.bytes, "mode": "unchecked-hash"},
        "stripped": {rule: asdict(size) for rule, size in removed.items()},
        "requires_glibc": f"{glibc[0]}.{glibc[1]}" if glibc else None,
        "lambda_glibc": "{}.{}".format(*LAMBDA_PYTHON_GLIBC[python_version]),
        "lambda_compatible": glibc is None or glibc <= LAMBDA_PYTHON_GLIBC[python_version],
        "packages": installed_packages(python_dir),
    }
    return record, (before, stripped_size, after), removed


def _publish(staging: Path, final: Path, digest: str, rebuild: bool) -> None:
    """Rename the finished ``staging`` into ``final``; a concurrent build of the same entry may have
    finished first, and then its (identical) result is kept."""
    staging.chmod(0o755)  # mkdtemp makes it private; the entry is shared like any build output
    if rebuild or _read_marker(final, digest) is None:
        if final.exists():  # a rebuild, or an entry without its marker
            _discard(final)
        try:
            staging.rename(final)
        except OSError:
            if _read_marker(final, digest) is None:
                raise


def build_layer(
    python_version: str,
    arch: str,
    *,
    requirements: Path = DEFAULT_REQUIREMENTS,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    rebuild: bool = False,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> LayerBuild:
    """Build the layer for a Lambda Python runtime and architecture, or reuse its cache entry."""
    python_version = check_python_version(python_version)
    arch = check_arch(arch)
    try:
        requirement_bytes = requirements.read_bytes()
    except OSError as exc:
        raise UsageError(f"--requirements: cannot read {requirements}: {exc.strerror}") from exc
    compiler = _compiler(python_version, log)
    digest = cache_hash(requirement_bytes, python_version, arch, bytecode=compiler is not None)
    final = cache_dir.resolve() / f"{arch}-py{python_version}-{digest}"

    record = _read_marker(final, digest)
    if record and not rebuild:
        log(f"layer {arch} py{python_version}: cached at {final}")
        return _result(final, record, cached=True)

    started = time.perf_counter()
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(final.parent, final.name)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        log(f"layer {arch} py{python_version}: installing {requirements.name} with pip (wheels for {arch})")
        record, sizes, removed = _install(staging / "python", requirements, python_version, arch, compiler)
        record |= {"hash": digest, "requirements_sha256": hashlib.sha256(requirement_bytes).hexdigest()}
        (staging / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        _publish(staging, final, digest, rebuild)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    before, stripped_size, after = sizes
    stripped = ", ".join(f"{rule} {_mb(size.bytes)}" for rule, size in removed.items() if size.files)
    log(
        f"layer {arch} py{python_version}: {_mb(before.bytes)} installed, {_mb(stripped_size.bytes)} after stripping "
        f"({stripped}), {_mb(after.bytes)} with bytecode of Python {compiler.version if compiler else '(none)'}; "
        f"built in {time.perf_counter() - started:.1f} s at {final}"
    )
    return _result(final, record, cached=False)


# --- command line ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, exit 2: the caller is usually a CDK synth that shows stderr as-is."""
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="build.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--python-version", help=f"Lambda Python runtime: {', '.join(LAMBDA_PYTHON_GLIBC)}")
    parser.add_argument("--arch", help=f"Lambda architecture: {', '.join(ARCHITECTURES)}")
    parser.add_argument("--requirements", type=Path, default=DEFAULT_REQUIREMENTS, help="default: %(default)s")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="default: %(default)s")
    parser.add_argument("--rebuild", action="store_true", help="build even if the cache holds this layer")
    parser.add_argument("--print-json", action="store_true", help="print one JSON object as stdout's last line")
    parser.add_argument("--measure", nargs="+", type=Path, metavar="PATH", help="print the unzipped size of PATHs")
    parser.add_argument(
        "--compile",
        type=Path,
        metavar="DIR",
        help="compile DIR's .py files with the --python-version interpreter (function code), then exit",
    )
    return parser


def compile_code(directory: Path, python_version: str) -> dict[str, Any]:
    """Compile function code for its runtime; what was compiled, or why nothing was (with a warning)."""
    if not directory.is_dir():
        raise UsageError(f"--compile: {directory} is not a directory")
    try:
        compiler = interpreters.find(check_python_version(python_version))
    except interpreters.InterpreterNotFound as exc:
        print(f"warning: {directory} is staged WITHOUT bytecode (every cold start compiles it): {exc}", file=sys.stderr)
        return {"path": str(directory.resolve()), "bytecode": None}
    interpreters.compile_tree(compiler, directory)
    return {"path": str(directory.resolve()), "bytecode": compiler.version}


def _warn_if_incompatible(build: LayerBuild) -> None:
    if not build.lambda_compatible:
        glibc = "{}.{}".format(*LAMBDA_PYTHON_GLIBC[build.python_version])
        print(
            f"warning: the Lambda python{build.python_version} runtime has glibc {glibc}, but these wheels need "
            f"glibc {build.requires_glibc}: the layer imports on this machine, not in Lambda; "
            "use --python-version 3.12 or later to deploy",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2 bad flag, 1 pip failed)."""
    args = _parser().parse_args(argv)
    try:
        if args.measure:
            try:
                sizes = [measure(path) for path in args.measure]
            except NotADirectoryError as exc:
                raise UsageError(f"--measure: {exc}") from exc
            total = DirectorySize(sum(s.bytes for s in sizes), sum(s.files for s in sizes))
            if args.print_json:
                paths = [str(path.resolve()) for path in args.measure]
                print(json.dumps({"paths": paths, "bytes": total.bytes, "files": total.files}))
            else:
                print(total.bytes)
            return 0
        if args.compile:
            if not args.python_version:
                raise UsageError("--compile needs --python-version")
            print(json.dumps(compile_code(args.compile, args.python_version)))
            return 0
        for flag, value in (("--python-version", args.python_version), ("--arch", args.arch)):
            if not value:
                raise UsageError(f"{flag} is required (or --measure PATH)")
        build = build_layer(
            args.python_version,
            args.arch,
            requirements=args.requirements,
            cache_dir=args.cache_dir,
            rebuild=args.rebuild,
        )
    except UsageError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 2
    except PipError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    _warn_if_incompatible(build)
    if args.print_json:
        print(json.dumps(asdict(build)))
    else:
        state = "cached" if build.cached else "built"
        print(
            f"{build.path}\n  {build.arch} python{build.python_version}, {state}: {_mb(build.bytes)} unzipped, "
            f"{build.files} files ({_mb(build.bytes_before_strip)} before stripping), hash {build.hash}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prepare an arm64 Debian sysroot whose python3.13 runs Lambda's arm64 layer on this x86_64 machine.

Lambda's arm64 functions run on Graviton (aarch64). Without Docker, the arm64 layer is exercised
here by qemu-user (Debian's ``qemu-user-static``) running Debian trixie's aarch64 CPython 3.13::

    python layers/arm64_sysroot.py --print-json

prints, as stdout's last line, a JSON object with the sysroot's ``path``, its Python ``version``
and the ``command`` that starts that interpreter (``qemu-aarch64-static -L DIR DIR/usr/bin/python3.13``).
How the sysroot is made (see DESIGN.md, "Measured 2026-12-01"):

1. ``debootstrap --foreign --arch=arm64 --variant=minbase trixie DIR`` (the first stage only: it
   unpacks, it runs nothing of the guest);
2. python3.13 and every library it needs, resolved by an apt configuration of this script's own
   (``deb [arch=arm64] ... trixie main``, the host's apt state is never read or touched):
   ``apt-cache depends --recurse``, ``apt-get download``, ``dpkg -x`` into DIR;
3. two traps of qemu-user: it looks every absolute path up under its ``-L`` prefix first, and
   debootstrap leaves ``DIR/proc`` as a symlink to the host's /proc, so the guest would read the
   x86 host's /proc/cpuinfo (onnxruntime's cpuinfo then segfaults on import). ``DIR/proc`` becomes
   a folder holding an ARM ``cpuinfo`` (Graviton2's Neoverse N1); every other /proc path is not
   under the prefix and so falls through to the host's, as the guest needs.

The result is cached in ``.cache/arm64-sysroot/`` and appears only complete: it is built in a
staging folder beside it and renamed into place once the interpreter has run. Running the script
again returns at once. It needs root (debootstrap) and Debian's qemu-user-static and debootstrap;
when one is missing it says how to get it and exits 1.

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO_ROOT / ".cache" / "arm64-sysroot"
MARKER = "onnxfn-sysroot.json"  # written last; its presence means the sysroot is complete

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
PACKAGES = ("python3.13-minimal", "libpython3.13-stdlib")
PYTHON = "usr/bin/python3.13"
QEMU = "qemu-aarch64-static"
# Lambda's arm64 functions run on Graviton2 (Neoverse N1): the CPU qemu emulates and /proc/cpuinfo agree.
QEMU_CPU = "neoverse-n1"
# Bump when the recipe changes in a way the key below does not show.
RECIPE_VERSION = 1
KEY = {"suite": SUITE, "packages": list(PACKAGES), "cpu": QEMU_CPU, "recipe": RECIPE_VERSION}

# What the tools are and where they come from, for the message when one is missing.
TOOLS = {
    "debootstrap": "debootstrap",
    QEMU: "qemu-user-static",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
}

# One block per processor is added by cpuinfo(); the fields Linux prints for a Neoverse N1.
_CPUINFO_BLOCK = """processor\t: {index}
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
"""
_DEPENDS = re.compile(r"^\s+\|?(?:Pre)?Depends: (\S+)$")


class SysrootError(Exception):
    """The sysroot cannot be prepared here; the message says why and what to do (exit status 1)."""


def log(message: str) -> None:
    print(f"arm64-sysroot: {message}", file=sys.stderr)


def missing_tools() -> list[str]:
    """The tools this machine lacks, each with the Debian package that has it."""
    return [f"{tool} (Debian package {package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]


def check_tools(building: bool) -> None:
    """SysrootError naming what is missing and the command that installs it."""
    needed = missing_tools() if building else [t for t in missing_tools() if t.startswith(QEMU)]
    if needed:
        packages = " ".join(sorted({TOOLS[t.split()[0]] for t in needed}))
        raise SysrootError(
            f"missing {', '.join(needed)}: install with `sudo apt-get install {packages}` "
            "(or `make arm64-sysroot` as root)"
        )
    if building and os.geteuid() != 0:
        raise SysrootError("debootstrap needs root: run `sudo make arm64-sysroot` once (the result is cached)")
    if building and not KEYRING.is_file():
        raise SysrootError(
            f"{KEYRING} is missing: install Debian's archive keys with `apt-get install debian-archive-keyring`"
        )


def command(root: Path) -> list[str]:
    """The command that starts the sysroot's aarch64 python3.13 under qemu-user."""
    qemu = shutil.which(QEMU) or QEMU
    return [qemu, "-L", str(root), "-cpu", QEMU_CPU, str(root / PYTHON)]


def cpuinfo(processors: int) -> str:
    """An ARM /proc/cpuinfo with ``processors`` entries (as many as the host has: /sys comes from it)."""
    return "\n".join(_CPUINFO_BLOCK.format(index=index) for index in range(processors))


def read_marker(root: Path) -> dict[str, Any] | None:
    """The completion record of the sysroot, if it is complete and made by this recipe."""
    try:
        record: dict[str, Any] = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("key") == KEY and (root / PYTHON).exists() else None


def _run(args: Sequence[str], what: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(
        list(args), capture_output=True, text=True, env=env, cwd=cwd, check=False, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip())[-2500:]
        raise SysrootError(f"{what} failed (exit {result.returncode}): {' '.join(args[:4])} ...\n{tail}")
    return result.stdout


def debootstrap(root: Path) -> None:
    """The first stage of a minimal arm64 trixie: packages unpacked into ``root``, nothing run."""
    log(f"debootstrap --foreign --arch=arm64 --variant=minbase {SUITE} (about 30 s)")
    flags = ["--foreign", "--arch=arm64", "--variant=minbase", f"--keyring={KEYRING}"]
    _run(["debootstrap", *flags, SUITE, str(root), MIRROR], "debootstrap")
    # The packages and their index (54 MB) are kept for a second stage, which never runs here.
    for leftover in [*(root / "var/cache/apt/archives").glob("*.deb"), *(root / "var/lib/apt/lists").glob("*_*")]:
        leftover.unlink()


def apt_environment(state: Path) -> dict[str, str]:
    """An apt of this script's own: arm64 trixie only, its state in ``state``, nothing of the host's apt."""
    for folder in ("etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d", "lists/partial"):
        (state / folder).mkdir(parents=True, exist_ok=True)
    (state / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "status").write_text("")  # nothing counts as installed
    (state / "etc" / "sources.list").write_text(f"deb [arch=arm64 signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
    settings = {
        "APT::Architecture": "arm64",
        "Dir::Etc": str(state / "etc"),
        "Dir::State": str(state),
        "Dir::State::Lists": str(state / "lists"),
        "Dir::State::status": str(state / "status"),
        "Dir::Cache": str(state),
        "Dir::Cache::archives": str(state / "archives"),
        "Dir::Cache::pkgcache": "",
        "Dir::Cache::srcpkgcache": "",
        "Debug::NoLocking": "true",
        "Acquire::Languages": "none",
        "APT::Sandbox::User": "root",  # the state folder is private to this process
    }
    lines = [f'{name} "{value}";' for name, value in settings.items()]
    lines.append('APT::Architectures { "arm64"; };')  # no foreign architecture from the host's dpkg
    config = state / "apt.conf"
    config.write_text("\n".join(lines) + "\n")
    return {**os.environ, "APT_CONFIG": str(config), "LC_ALL": "C"}


def python_packages(env: dict[str, str]) -> list[str]:
    """python3.13-minimal, libpython3.13-stdlib and everything they depend on, recursively."""
    flags = ["--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"]
    output = _run(["apt-cache", "depends", "--recurse", *flags, *PACKAGES], "apt-cache depends", env=env)
    names = set()
    for line in output.splitlines():
        match = _DEPENDS.match(line)
        name = match.group(1) if match else line.strip() if line and not line[0].isspace() else ""
        if name and not name.startswith("<"):  # <virtual> names have no package of their own
            names.add(name.split(":")[0])
    return sorted(names)


def install_python(root: Path, state: Path) -> list[str]:
    """Download python3.13 and its libraries for arm64 and unpack them into ``root``; the package names."""
    env = apt_environment(state)
    log(f"apt-get update ({SUITE} main, arm64)")
    _run(["apt-get", "update", "-qq"], "apt-get update", env=env)
    packages = python_packages(env)
    debs = state / "debs"
    debs.mkdir()
    log(f"apt-get download: {len(packages)} packages")
    _run(["apt-get", "download", "-qq", *packages], "apt-get download", env=env, cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg -x {deb.name}")
    return packages


def replace_proc(root: Path) -> None:
    """``root/proc``: a folder holding an ARM cpuinfo, never the symlink to the host's /proc."""
    proc = root / "proc"
    if proc.is_symlink() or proc.is_file():
        proc.unlink()
    elif proc.is_dir():
        shutil.rmtree(proc)
    proc.mkdir()
    (proc / "cpuinfo").write_text(cpuinfo(os.cpu_count() or 1))


def probe(root: Path) -> tuple[str, str]:
    """(machine, version) the sysroot's interpreter reports under qemu-user."""
    script = "import platform, sys; print(platform.machine(), '%d.%d.%d' % sys.version_info[:3])"
    output = _run([*command(root), "-I", "-S", "-c", script], "running python3.13 under qemu-user", env={})
    machine, version = output.split()
    return machine, version


def _remove_stale_staging(root: Path, older_than_s: float = 3 * 3600) -> None:
    """Staging folders of runs that were killed (a run takes well under a minute)."""
    for leftover in root.parent.glob(f".{root.name}.*"):
        if time.time() - leftover.stat().st_mtime > older_than_s:
            shutil.rmtree(leftover, ignore_errors=True)


def _result(root: Path, record: dict[str, Any], cached: bool) -> dict[str, Any]:
    return {"path": str(root), "version": record["version"], "command": command(root), "cached": cached}


def prepare(root: Path = DEFAULT_DIR, rebuild: bool = False) -> dict[str, Any]:
    """The sysroot at ``root``: reused when complete, otherwise built beside it and renamed into place."""
    root = root.resolve()
    record = read_marker(root)
    if record and not rebuild:
        check_tools(building=False)
        return _result(root, record, cached=True)
    check_tools(building=True)
    started = time.perf_counter()
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(root)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    state = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".apt", dir=root.parent))
    try:
        debootstrap(staging)
        packages = install_python(staging, state)
        replace_proc(staging)
        machine, version = probe(staging)
        if machine != "aarch64" or not version.startswith("3.13."):
            raise SysrootError(f"the sysroot's interpreter reports {machine} Python {version}, expected aarch64 3.13")
        record = {"key": KEY, "version": version, "machine": machine, "packages": packages, "mirror": MIRROR}
        (staging / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private
        # A concurrent run may have finished first: keep its (equivalent) sysroot.
        if rebuild or read_marker(root) is None:
            if root.exists() or root.is_symlink():  # a rebuild, or an entry without its marker: set it aside
                aside = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".discard", dir=root.parent))
                root.rename(aside / root.name)
                shutil.rmtree(aside, ignore_errors=True)
            staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    log(
        f"Python {version} (aarch64, {len(packages)} packages) ready in {time.perf_counter() - started:.0f} s at {root}"
    )
    return _result(root, record, cached=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; exit status 1 with the reason on stderr when the sysroot cannot be made."""
    parser = argparse.ArgumentParser(prog="arm64_sysroot.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="default: %(default)s")
    parser.add_argument("--rebuild", action="store_true", help="build even if a complete sysroot exists")
    parser.add_argument("--print-json", action="store_true", help="print one JSON object as stdout's last line")
    args = parser.parse_args(argv)
    try:
        result = prepare(args.dir, rebuild=args.rebuild)
    except SysrootError as exc:
        print(f"arm64_sysroot.py: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.print_json else result["path"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

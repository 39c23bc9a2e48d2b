"""What pip installs for a Lambda target, and which Linux it needs: the layer's wheels.

Standard library only, like ``build.py``, which loads this file as a sibling module.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# Lambda's architecture names and pip's.
ARCHITECTURES = {"x86_64": "x86_64", "arm64": "aarch64"}
# Lambda's Python runtimes and the glibc of the Amazon Linux they run on: python3.11 is Amazon
# Linux 2 (glibc 2.26), python3.12 and later Amazon Linux 2023 (glibc 2.34).
LAMBDA_PYTHON_GLIBC = {"3.11": (2, 26), "3.12": (2, 34), "3.13": (2, 34), "3.14": (2, 34)}
# onnxruntime publishes no manylinux2014 wheel any more, so manylinux_2_28 comes first.
MANYLINUX_TAGS = ("manylinux_2_28", "manylinux_2_17", "manylinux2014")

# A manylinux platform tag and the glibc it requires.
_MANYLINUX_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_MANYLINUX_PEP600 = re.compile(r"manylinux_(\d+)_(\d+)_")
_PIP_NOISE = re.compile(r"^WARNING: Location '.*' is ignored")


class PipError(Exception):
    """pip could not install the requirements for the target (exit status 1)."""


def platform_tags(arch: str) -> list[str]:
    """pip ``--platform`` values for an architecture, most preferred first."""
    return [f"{tag}_{ARCHITECTURES[arch]}" for tag in MANYLINUX_TAGS]


# --- install --------------------------------------------------------------------------------------


def pip_install(requirements: Path, target: Path, python_version: str, arch: str) -> None:
    """Install the requirements' wheels for the target into ``target`` (nothing compiled here)."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check"]
    command += ["--no-input", "--target", str(target)]
    for tag in platform_tags(arch):
        command += ["--platform", tag]
    command += ["--implementation", "cp", "--python-version", python_version, "--only-binary=:all:"]
    command += ["-r", str(requirements)]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stdout.splitlines() if line.strip() and not _PIP_NOISE.match(line)]
        tail = "\n".join(lines[-15:]) or "(pip printed nothing)"
        raise PipError(f"pip install for Python {python_version} {arch} failed (exit {result.returncode}):\n{tail}")


# --- what was installed ---------------------------------------------------------------------------


def _tag_glibc(tag: str) -> tuple[int, int] | None:
    platform = tag.rsplit("-", 1)[-1]
    match = _MANYLINUX_PEP600.match(platform)
    if match:
        return int(match.group(1)), int(match.group(2))
    for legacy, glibc in _MANYLINUX_LEGACY.items():
        if platform.startswith(legacy + "_"):
            return glibc
    return None


def required_glibc(python_dir: Path) -> tuple[int, int] | None:
    """The newest glibc any installed wheel needs (a wheel with several tags needs its oldest)."""
    needed: tuple[int, int] | None = None
    for wheel in python_dir.glob("*.dist-info/WHEEL"):
        tags = [line.split(":", 1)[1].strip() for line in wheel.read_text().splitlines() if line.startswith("Tag:")]
        versions = [v for v in map(_tag_glibc, tags) if v is not None]
        if versions and (needed is None or min(versions) > needed):
            needed = min(versions)
    return needed


def installed_packages(python_dir: Path) -> dict[str, str]:
    """Distribution name → version, from the dist-info folders."""
    packages = {}
    for info in sorted(python_dir.glob("*.dist-info")):
        name, _, version = info.name.removesuffix(".dist-info").rpartition("-")
        packages[name] = version
    return packages

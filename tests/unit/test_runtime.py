"""The one definition of "the function as Lambda runs it": which interpreter, which path, which CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from onnxfn.local import runtime
from onnxfn.local.runtime import RuntimeOptions, RuntimeUnavailable, interpreters, layer_paths, plan, vcpus


@pytest.fixture(autouse=True)
def fresh_lookup():
    """Each test finds interpreters in its own environment (the lookup is cached per process)."""
    runtime._interpreter.cache_clear()
    yield
    runtime._interpreter.cache_clear()


def test_the_runtimes_interpreter_is_found_with_its_full_version():
    found = interpreters().find("python3.12")
    assert found.minor == "3.12" and found.version.startswith("3.12.")
    assert interpreters().probe(found.path) == found.version


def test_an_interpreter_of_another_version_is_refused_with_what_was_found():
    with pytest.raises(
        interpreters().InterpreterNotFound, match=r"expected a Python 3\.12 interpreter, found Python 3\.11"
    ):
        interpreters().find("3.12", sys.executable)


def test_nothing_found_says_where_it_looked_and_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no python3.12, no uv
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.delenv("ONNXFN_PYTHON_3_13", raising=False)
    with pytest.raises(interpreters().InterpreterNotFound) as missing:
        interpreters().find("3.13")
    message = str(missing.value)
    for hint in ("on PATH", "pyenv", "uv python install 3.13", "ONNXFN_PYTHON_3_13=", "--python"):
        assert hint in message


def test_the_environment_variable_names_the_interpreter(monkeypatch):
    path = interpreters().find("3.13").path
    monkeypatch.setenv("ONNXFN_PYTHON_3_13", path)
    assert interpreters().find("3.13").source == "given"
    monkeypatch.setenv("ONNXFN_PYTHON_3_13", "/nonexistent/python3.13")
    with pytest.raises(interpreters().InterpreterNotFound, match="found nothing that runs"):
        interpreters().find("3.13")


def test_a_faithful_plan_puts_code_then_layer_first_and_isolates_the_interpreter(tmp_path):
    layer = tmp_path / "layer"
    launch = plan("python3.13", "x86_64", 512, tmp_path / "code", [layer], RuntimeOptions())
    assert launch.faithful and launch.version.startswith("3.13.")
    assert launch.command[1:4] == ("-I", "-S", "-B")  # no PYTHON* variables, no site-packages, no bytecode
    assert launch.sys_path == (str(tmp_path / "code"), *layer_paths(layer, "3.13"))
    assert layer_paths(layer, "3.13") == [str(layer / "python/lib/python3.13/site-packages"), str(layer / "python")]
    assert launch.cpu.vcpus == pytest.approx(512 / 1769)
    assert "Python 3.13" in launch.describe() and "0.29 vCPU" in launch.describe()


def test_the_dev_runtime_says_it_is_not_what_deploys(tmp_path):
    launch = plan("python3.12", "x86_64", 1769, tmp_path, [], RuntimeOptions(dev=True))
    assert not launch.faithful and launch.interpreter == sys.executable
    assert "NOT what deploys" in launch.describe()


def test_a_missing_interpreter_is_a_clear_error_naming_the_escape(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    with pytest.raises(RuntimeUnavailable, match="--dev-runtime"):
        plan("python3.12", "x86_64", 1769, tmp_path, [], RuntimeOptions())


def test_cpu_share_is_lambdas_and_an_unenforced_share_says_why(tmp_path):
    assert [round(vcpus(mb), 3) for mb in (512, 1024, 1769, 3008, 10240)] == [0.289, 0.579, 1.0, 1.7, 5.789]
    launch = plan("python3.12", "x86_64", 1024, tmp_path, [], RuntimeOptions(cpu_share=False))
    assert not launch.cpu.enforced and "NOT enforced" in launch.describe()
    if os.geteuid() == 0 and Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists():
        assert plan("python3.12", "x86_64", 1024, tmp_path, [], RuntimeOptions()).cpu.enforced


def test_quota_folders_of_killed_servers_are_removed_by_the_next_one():
    import subprocess

    from onnxfn.local.runtime import CGROUP_CPU, CpuQuota

    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now belongs to nobody
    parent = CGROUP_CPU / "onnxfn"
    parent.mkdir(exist_ok=True)
    orphan = parent / f"{dead.pid}-Fn-0"
    orphan.mkdir()
    quota = CpuQuota("Fn-0", 0.25)
    try:
        assert not orphan.exists()
        assert int((quota.path / "cpu.cfs_quota_us").read_text()) == 25_000
    finally:
        quota.close()
    assert not quota.path.exists()

"""`onnxfn add` registers the model in the app's cdk.json (the memory it recommends, or the user's),
`onnxfn remove` takes it out and deletes the artifact, and what the app leaves out is named with why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxfn.cli import main
from stacks.config import load_config, undeployed
from tests.prepare.test_add import _mlp

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An app folder: the shipped cdk.json without its model list (so every artifact deploys)."""
    document = json.loads((ROOT / "cdk.json").read_text())
    del document["context"]["onnxfn"]["models"]
    (tmp_path / "cdk.json").write_text(json.dumps(document, indent=2) + "\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _context(project: Path) -> dict:
    return json.loads((project / "cdk.json").read_text())["context"]["onnxfn"]


def _add(project: Path, name: str, *extra: str) -> int:
    source = _mlp(project / f"{name}.onnx")
    return main(
        ["--root", "model_artifacts", "add", str(source), "--name", name, "--max-rel-error", "0.25", "--no-fit", *extra]
    )


def test_add_registers_and_remove_unregisters(project, capsys):
    assert _add(project, "first") == 0
    recommended = _context(project)["models"]["first"]["memory_mb"]
    assert "registered first in cdk.json: memory_mb" in capsys.readouterr().out
    assert _add(project, "second", "--memory-mb", "1024") == 0
    assert _context(project)["models"] == {"first": {"memory_mb": recommended}, "second": {"memory_mb": 1024}}
    # adding again keeps the user's memory unless asked
    assert _add(project, "second", "--force") == 0
    assert _context(project)["models"]["second"] == {"memory_mb": 1024}
    assert "memory_mb 1024 kept" in capsys.readouterr().out

    config = load_config(_context(project), project)
    assert {m.name: m.settings.memory_mb for m in config.models} == {"first": recommended, "second": 1024}
    assert config.undeployed == ()

    assert main(["--root", "model_artifacts", "remove", "second"]) == 0
    assert not (project / "model_artifacts" / "second").exists()
    assert _context(project)["models"] == {"first": {"memory_mb": recommended}}
    assert main(["--root", "model_artifacts", "remove", "first", "--keep-artifact"]) == 0
    assert "models" not in _context(project)  # nothing listed: every artifact deploys again
    assert (project / "model_artifacts" / "first" / "manifest.json").exists()
    assert main(["--root", "model_artifacts", "remove", "nothing-here"]) == 2
    assert "no model 'nothing-here'" in capsys.readouterr().err


def test_a_listed_app_gains_the_model_and_keeps_the_others(project, capsys):
    assert _add(project, "first") == 0  # the first add lists every artifact found
    (project / "model_artifacts" / "first").rename(project / "model_artifacts" / "kept")
    document = json.loads((project / "cdk.json").read_text())
    document["context"]["onnxfn"]["models"] = {"kept": {"memory_mb": 512, "timeout_s": 10}}
    (project / "cdk.json").write_text(json.dumps(document))
    (project / "model_artifacts" / "kept" / "manifest.json").write_text(
        (project / "model_artifacts" / "kept" / "manifest.json")
        .read_text()
        .replace('"name": "first"', '"name": "kept"')
    )
    assert _add(project, "next") == 0
    models = _context(project)["models"]
    assert models["kept"] == {"memory_mb": 512, "timeout_s": 10} and "memory_mb" in models["next"]


def test_an_add_elsewhere_says_it_is_not_deployed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no cdk.json here
    source = _mlp(tmp_path / "m.onnx")
    args = ["--root", str(tmp_path / "arts"), "add", str(source), "--name", "m", "--max-rel-error", "0.25"]
    assert main([*args, "--no-fit"]) == 0
    assert "not deployed yet: no " in capsys.readouterr().out


def test_what_the_app_leaves_out_is_named_with_why(project, capsys):
    assert _add(project, "listed") == 0
    assert _add(project, "extra") == 0
    document = json.loads((project / "cdk.json").read_text())
    document["context"]["onnxfn"]["models"] = {"listed": {}}
    (project / "cdk.json").write_text(json.dumps(document))
    (project / "model_artifacts" / "stray").mkdir()
    left = dict(undeployed(_context(project), project))
    assert "does not list it" in left[str(Path("model_artifacts") / "extra")]
    assert "no manifest.json" in left[str(Path("model_artifacts") / "stray")]
    assert [m.name for m in load_config(_context(project), project).models] == ["listed"]
    capsys.readouterr()
    from onnxfn.local.commands import print_undeployed

    print_undeployed(project)
    err = capsys.readouterr().err
    assert "not deployed: model_artifacts/extra: cdk.json's onnxfn.models does not list it" in err
    assert main(["--root", "model_artifacts", "list"]) == 0
    out = capsys.readouterr().out
    assert "no: not in cdk.json" in out and "yes" in out

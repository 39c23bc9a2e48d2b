"""Pickled models as people save them: a class from the training script (a hint and --module-path),
TorchScript (no class, no trust needed), and options that do not apply to a source refused."""

from __future__ import annotations

import sys
import textwrap

import joblib
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from contract.manifest import Manifest
from onnxfn.cli import main
from tests.prepare.test_add import _mlp

NET = textwrap.dedent(
    """
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

        def forward(self, x):
            return self.body(x)
    """
)


def _add(root, source, name, *extra):
    return main(["--root", str(root), "add", str(source), "--name", name, "--no-fit", *extra])


def _saved_from_a_script(tmp_path):
    """What `python train.py` leaves: a pickle naming __main__.Net, and the script that defines it."""
    import torch

    script = tmp_path / "train.py"
    script.write_text(NET)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(NET, str(script), "exec"), namespace)
    net = namespace["Net"]()
    main_module = sys.modules["__main__"]
    main_module.Net = namespace["Net"]  # as in the training script's own process
    try:
        torch.save(net, tmp_path / "net.pt")
    finally:
        del main_module.Net
    return tmp_path / "net.pt", script, net


def test_a_class_from_the_training_script_gets_a_hint_and_module_path_loads_it(tmp_path, capsys):
    root = tmp_path / "artifacts"
    saved, script, _ = _saved_from_a_script(tmp_path)
    assert _add(root, saved, "net", "--trust-pickle", "--input-shape", "2,12") == 2
    err = capsys.readouterr().err
    assert "refers to class 'Net' defined in the script that saved it (__main__)" in err
    assert "--module-path" in err and "TorchScript" in err
    assert _add(root, saved, "net", "--trust-pickle", "--input-shape", "2,12", "--module-path", str(script)) == 0
    assert not hasattr(sys.modules["__main__"], "Net")  # borrowed for the load only
    assert Manifest.load(root / "net" / "manifest.json").inputs[0].shape == (-1, 12)


def test_torchscript_needs_neither_trust_nor_the_class(tmp_path):
    import torch

    _, _, net = _saved_from_a_script(tmp_path)
    torch.jit.script(net).save(str(tmp_path / "scripted.pt"))
    root = tmp_path / "artifacts"
    assert _add(root, tmp_path / "scripted.pt", "scripted", "--input-shape", "2,12", "--labels", "a,b,c") == 0
    manifest = Manifest.load(root / "scripted" / "manifest.json")
    assert manifest.pipeline is not None and manifest.pipeline.labels == ("a", "b", "c")


def test_options_that_do_not_apply_are_refused(tmp_path, capsys):
    root = tmp_path / "artifacts"
    features, labels = load_digits(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=300).fit(features, labels), tmp_path / "clf.joblib")
    assert _add(root, tmp_path / "clf.joblib", "clf", "--trust-pickle", "--labels", "a,b") == 2
    assert "--labels: not used for a scikit-learn file (clf.joblib)" in capsys.readouterr().err
    assert _add(root, _mlp(tmp_path / "m.onnx"), "m", "--trust-pickle", "--input-shape", "1,16") == 2
    assert "--trust-pickle, --input-shape: not used for an ONNX file (m.onnx)" in capsys.readouterr().err
    assert not (root / "clf").exists() and not (root / "m").exists()

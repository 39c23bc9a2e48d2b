"""The CLI: a failure the user can fix is one line and exit 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import pytest

from onnxfn import cli
from onnxfn.errors import UnknownName, UserError


def _command(monkeypatch, error: BaseException) -> None:
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_cmd_list", fail)


@pytest.mark.parametrize("error", [UserError("the thing you asked for is wrong: do this"), UnknownName("no model 'x'")])
def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys, error):
    _command(monkeypatch, error)
    assert cli.main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {error}" and "Traceback" not in err


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("a bug"), RuntimeError("a bug"), TypeError("a bug")])
def test_anything_else_is_a_bug_and_propagates_with_its_traceback(monkeypatch, error):
    _command(monkeypatch, error)
    with pytest.raises(type(error)):
        cli.main(["list"])


def test_invoke_with_an_event_that_is_not_json_is_a_user_error(tmp_path, capsys):
    code = cli.main(
        [
            "invoke",
            "--state-file",
            str(tmp_path / "none.json"),
            "--app",
            str(tmp_path),
            "function",
            "f",
            "-e",
            "@missing.json",
        ]
    )
    assert code == 2
    assert "cannot read missing.json" in capsys.readouterr().err

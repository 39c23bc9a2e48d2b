"""Loading pickled models (scikit-learn's joblib files, PyTorch's ``torch.save``) and TorchScript.

A pickle names the classes it holds by module: a class defined in the training script is
``__main__.Net``, which no other process can import. ``--module-path train.py`` makes that script's
classes importable (as its own module and as ``__main__``) while the file loads; without it, the
error says which class is missing and what to do. TorchScript archives need no class and run no
pickled code, so they load without ``--trust-pickle``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from onnxfn.errors import UserError

_MISSING_ATTRIBUTE = re.compile(r"Can't get attribute '([\w.]+)' on <module '([\w.]+)'")
_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")


class PickleError(UserError, ValueError):
    """A pickled model cannot be loaded; the message says why and what would work."""


@contextlib.contextmanager
def classes_from(module_path: Path | None) -> Iterator[None]:
    """While loading: ``module_path`` importable under its own name, and its names in ``__main__``."""
    if module_path is None:
        yield
        return
    if not module_path.is_file():
        raise PickleError(f"--module-path {module_path}: no such file; expected the .py file that defines the model")
    name = module_path.stem
    spec = importlib.util.spec_from_file_location(name, module_path)
    if spec is None or spec.loader is None:
        raise PickleError(f"--module-path {module_path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(module_path.parent))
    previous = sys.modules.get(name)
    sys.modules[name] = module
    main = sys.modules["__main__"]
    added: list[str] = []
    try:
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise PickleError(
                f"--module-path {module_path}: importing it failed ({type(exc).__name__}: {exc})"
            ) from exc
        for attribute, value in vars(module).items():
            if not attribute.startswith("__") and not hasattr(main, attribute):
                setattr(main, attribute, value)
                added.append(attribute)
        yield
    finally:
        for attribute in added:
            delattr(main, attribute)
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        sys.path.remove(str(module_path.parent))


def explain(path: Path, exc: BaseException, what: str) -> str:
    """Why ``path`` did not load, with the way out when a class or module it names is missing."""
    text = str(exc)
    attribute = _MISSING_ATTRIBUTE.search(text)
    if attribute:
        cls, module = attribute.groups()
        where = "the script that saved it (__main__)" if module == "__main__" else f"module {module!r}"
        return (
            f"{path.name} refers to class {cls!r} defined in {where}, which is not importable here: pass "
            "--module-path FILE.py (the file that defines it)"
            + (
                ", or save TorchScript instead (torch.jit.script(model).save(...)), which needs no class"
                if what == "PyTorch"
                else ""
            )
        )
    module = _MISSING_MODULE.search(text) if isinstance(exc, ModuleNotFoundError) else None
    if module:
        return (
            f"{path.name} refers to module {module.group(1)!r}, which is not importable here: pass "
            f"--module-path {module.group(1).split('.')[0]}.py, or install the package that provides it"
        )
    return f"{path} could not be loaded as a {what} file ({type(exc).__name__}: {text[:300]})"


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (``torch.jit.save``): a zip holding compiled code, not just pickled data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.startswith("code/") for name in archive.namelist())


def load(path: Path, loader: Callable[[Path], Any], what: str, *, trust: bool, module_path: Path | None) -> Any:
    """``loader(path)`` for a pickle the user trusts, with ``module_path``'s classes importable."""
    if not trust:
        raise PickleError(
            f"{path.name}: loading a {what} file runs code from it; pass --trust-pickle if you trust its origin"
        )
    with classes_from(module_path):
        try:
            return loader(path)
        except PickleError:
            raise
        except Exception as exc:
            raise PickleError(explain(path, exc, what)) from exc

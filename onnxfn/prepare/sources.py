"""What a user brings, turned into an fp32 ONNX model plus what describes it.

Four kinds: an ``.onnx`` file; a scikit-learn estimator or pipeline (joblib/pickle, converted by
skl2onnx with zipmap off); a PyTorch module saved whole with ``torch.save`` (exported by
``torch.onnx.export``); a BERT-family / sentence-transformers checkpoint folder (``config.json``,
``model.safetensors``, ``tokenizer.json``), built into a text-embedding model with numpy + onnx.
Unpickling runs code from the file, so the two pickle kinds need ``trust_pickle``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from handlers.runtime.pipelines.classification import classification_outputs
from handlers.runtime.pipelines.text_embedding import TextTokenizer, pool
from onnxfn.errors import UserError
from onnxfn.prepare import pickles
from onnxfn.prepare.layout import graph_io, model_inputs, random_samples
from onnxfn.prepare.validation import Feeds, Task

SUPPORTED = (
    "an .onnx file; a scikit-learn estimator or pipeline (.joblib, .pkl, .pickle; with --trust-pickle); "
    "a PyTorch module saved with torch.save (.pt, .pth; with --trust-pickle and --input-shape); "
    "a BERT / sentence-transformers checkpoint folder (config.json, model.safetensors, tokenizer.json); "
    "a Keras model (.keras, .h5); a TensorFlow SavedModel folder (saved_model.pb)"
)


class SourceError(UserError, ValueError):
    """The source cannot be used; the message says why and what would work."""


@dataclass
class Source:
    """An fp32 ONNX model in the staging folder and everything ``onnxfn add`` needs to describe it."""

    kind: str
    onnx_path: Path
    inputs: list[dict[str, Any]]  # client-facing tensors (manifest)
    outputs: list[dict[str, Any]]
    model_inputs: dict[str, tuple[np.dtype, tuple[int, ...]]]  # what the graph takes
    task: Task
    pipeline: dict[str, Any] | None = None
    files: dict[str, tuple[Path, str]] = field(default_factory=dict)  # extra artifact files
    tokenize: Callable[[list[str]], Feeds] | None = None
    samples: list[Feeds] = field(default_factory=list)
    texts: list[list[str]] = field(default_factory=list)  # a text model's samples as the client sends them
    client_samples: list[Feeds] = field(default_factory=list)  # a pipeline's samples as the client sends them
    facts: dict[str, Any] = field(default_factory=dict)
    max_batch: int = 64


# --- .onnx ---------------------------------------------------------------------------------------


def from_onnx(path: Path, staging: Path) -> Source:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError, ...
        raise SourceError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from exc
    inputs, outputs = graph_io(model)
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        reason = str(exc).split(" : ")[-1].splitlines()[0][:240]
        raise SourceError(f"onnxruntime {ort.__version__} cannot load {path.name}: {reason}") from exc
    target = staging / "original.onnx"
    shutil.copyfile(path, target)
    return Source(
        kind="onnx",
        onnx_path=target,
        inputs=inputs,
        outputs=outputs,
        model_inputs=model_inputs(inputs),
        task=Task(kind="raw", output=outputs[0]["name"]),
    )


# --- scikit-learn ----------------------------------------------------------------------------------


def from_sklearn(path: Path, staging: Path, options: SourceOptions) -> Source:
    import joblib

    input_name = options.input_name or "input"
    estimator = pickles.load(
        path, joblib.load, "pickle/joblib", trust=options.trust_pickle, module_path=options.module_path
    )
    if not hasattr(estimator, "predict") or not hasattr(estimator, "n_features_in_"):
        raise SourceError(f"{path.name} holds a {type(estimator).__name__}, not a fitted scikit-learn estimator")
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    features = int(estimator.n_features_in_)
    try:
        model = to_onnx(
            estimator,
            initial_types=[(input_name, FloatTensorType([None, features]))],
            options={"zipmap": False},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    except Exception as exc:
        raise SourceError(f"skl2onnx cannot convert {type(estimator).__name__}: {exc}") from exc
    target = staging / "original.onnx"
    onnx.save(model, str(target))
    samples = random_samples([{"name": input_name, "datatype": "FP32", "shape": [-1, features]}])
    inputs = [{"name": input_name, "datatype": "FP32", "shape": [-1, features]}]
    check = np.concatenate([s[input_name] for s in samples])
    expected = estimator.predict(check)
    import onnxruntime as ort

    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    got = session.run(None, {input_name: check})[0]
    if hasattr(estimator, "classes_") and hasattr(estimator, "predict_proba"):
        labels = [str(c) for c in estimator.classes_]
        agreement = float(np.mean(np.asarray(got).reshape(-1) == np.asarray(expected).reshape(-1)))
        if agreement < 0.99:
            raise SourceError(f"the converted model agrees with scikit-learn on {agreement:.1%} of samples")
        return Source(
            kind="sklearn",
            onnx_path=target,
            inputs=inputs,
            outputs=classification_outputs(labels, len(labels)),
            model_inputs=model_inputs(inputs),
            task=Task(kind="classifier", output="probabilities"),
            pipeline={"kind": "classification", "scores_output": "probabilities", "softmax": False, "labels": labels},
            samples=samples,
            facts={"estimator": type(estimator).__name__, "sklearn_agreement": agreement},
        )
    error = float(np.max(np.abs(np.asarray(got).reshape(-1) - np.asarray(expected, dtype=np.float64).reshape(-1))))
    _, outputs = graph_io(model)
    return Source(
        kind="sklearn",
        onnx_path=target,
        inputs=inputs,
        outputs=outputs,
        model_inputs=model_inputs(inputs),
        task=Task(kind="raw", output=outputs[0]["name"]),
        samples=samples,
        facts={"estimator": type(estimator).__name__, "sklearn_max_abs_error": error},
    )


# --- PyTorch -------------------------------------------------------------------------------------------


def exported(kind: str, target: Path, facts: dict[str, Any]) -> Source:
    """A raw-tensor source of an ONNX file a framework exported into the staging folder."""
    inputs, outputs = graph_io(onnx.load(str(target)))
    return Source(
        kind=kind,
        onnx_path=target,
        inputs=inputs,
        outputs=outputs,
        model_inputs=model_inputs(inputs),
        task=Task(kind="raw", output=outputs[0]["name"]),
        samples=random_samples(inputs),
        facts=facts,
    )


def _torch_module(torch: Any, path: Path, options: SourceOptions) -> Any:
    """The module in ``path``: a TorchScript archive, or a pickle the user trusts."""
    if pickles.is_torchscript(path):  # compiled code, no pickled classes: needs neither trust nor the class
        try:
            module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise SourceError(f"{path} could not be loaded as TorchScript ({type(exc).__name__}: {exc})") from exc
    else:
        module = pickles.load(
            path,
            lambda p: torch.load(p, weights_only=False, map_location="cpu"),
            "PyTorch",
            trust=options.trust_pickle,
            module_path=options.module_path,
        )
    if not isinstance(module, torch.nn.Module | torch.jit.ScriptModule):
        raise SourceError(f"{path.name} holds a {type(module).__name__}; save the whole module with torch.save(model)")
    return module


def from_pytorch(path: Path, staging: Path, options: SourceOptions) -> Source:
    try:
        import torch
    except ImportError as exc:
        raise SourceError("PyTorch sources need torch: pip install torch==2.13.0 (the CPU build)") from exc
    input_shape, labels = options.input_shape, options.labels
    if not input_shape:
        raise SourceError("a PyTorch module has no input schema: give --input-shape, e.g. --input-shape 1,64")
    module = _torch_module(torch, path, options)
    module.eval()
    example = torch.randn(*input_shape)
    target = staging / "original.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
        torch.onnx.export(
            module,
            (example,),
            str(target),
            dynamo=False,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
        )
    import onnxruntime as ort

    with torch.no_grad():
        expected = module(example).numpy()
    got = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"]).run(None, {"input": example.numpy()})[0]
    error = float(np.max(np.abs(got - expected)))
    if error > 1e-3:
        raise SourceError(f"the exported ONNX model differs from the module by {error:.2e} (max abs)")
    source = exported(
        "pytorch",
        target,
        {"module": type(module).__name__, "export_max_abs_error": error, "exporter": "torch.onnx (TorchScript)"},
    )
    outputs = source.outputs
    if labels:
        classes = int(outputs[0]["shape"][-1])
        if classes != len(labels):
            raise SourceError(f"--labels names {len(labels)} classes, the model outputs {classes} scores")
        source.outputs = classification_outputs(labels, classes)
        source.pipeline = {"kind": "classification", "scores_output": "output", "softmax": True, "labels": labels}
        source.task = Task(kind="classifier", output="output", softmax=True)
    return source


# --- BERT checkpoint -------------------------------------------------------------------------------------


def is_bert_checkpoint(path: Path) -> bool:
    return path.is_dir() and all((path / f).exists() for f in ("config.json", "model.safetensors", "tokenizer.json"))


def from_bert(path: Path, staging: Path) -> Source:
    from onnxfn.prepare.bert import build_bert_encoder, save_model
    from onnxfn.prepare.sentences import SENTENCES

    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (path / f).exists()]
    if missing:
        raise SourceError(f"{path} is not a BERT checkpoint folder: missing {', '.join(missing)}")
    max_length = 256
    config_file = path / "sentence_bert_config.json"
    if config_file.exists():
        max_length = int(json.loads(config_file.read_text()).get("max_seq_length", max_length))
    pooling = "mean"
    pooling_file = path / "1_Pooling" / "config.json"
    if pooling_file.exists() and json.loads(pooling_file.read_text()).get("pooling_mode_cls_token"):
        pooling = "cls"
    try:
        model = build_bert_encoder(path)
    except Exception as exc:
        raise SourceError(f"{path}: not a BERT-family checkpoint this builder understands ({exc})") from exc
    target = staging / "original.onnx"
    save_model(model, target)
    hidden = int(json.loads((path / "config.json").read_text())["hidden_size"])
    names = [i.name for i in model.graph.input]
    # The function's own tokenizer and pooling (handlers/runtime/pipelines/text_embedding.py): the gate checks the
    # code that deploys, character cut, missing attention mask and norm clip included.
    tokenize = TextTokenizer((path / "tokenizer.json").read_bytes(), max_length, names)

    def embed(hidden_states: np.ndarray, feeds: Feeds) -> np.ndarray:
        return pool(hidden_states, feeds, pooling, normalize=True)

    return Source(
        kind="bert",
        onnx_path=target,
        inputs=[{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        outputs=[{"name": "embedding", "datatype": "FP32", "shape": [-1, hidden]}],
        model_inputs={n: (np.dtype(np.int64), (-1, -1)) for n in names},
        task=Task(kind="embedder", output="last_hidden_state", embed=embed),
        pipeline={
            "kind": "text-embedding",
            "tokenizer": "tokenizer.json",
            "max_length": max_length,
            "pooling": pooling,
            "normalize": True,
            "hidden_output": "last_hidden_state",
        },
        files={"tokenizer.json": (path / "tokenizer.json", "tokenizer")},
        tokenize=tokenize,
        samples=[tokenize(SENTENCES[i : i + 16]) for i in range(0, len(SENTENCES), 16)],
        texts=[SENTENCES[i : i + 16] for i in range(0, len(SENTENCES), 16)],
        facts={"checkpoint": path.name, "hidden_size": hidden, "pooling": pooling},
    )


@dataclass(frozen=True)
class SourceOptions:
    """What a user may say about a source; each kind takes some (``APPLIES``) and refuses the rest."""

    trust_pickle: bool = False
    input_name: str | None = None
    input_shape: list[int] | None = None
    labels: list[str] | None = None
    module_path: Path | None = None

    def given(self) -> dict[str, str]:
        flags = {
            "trust_pickle": "--trust-pickle",
            "input_name": "--input-name",
            "input_shape": "--input-shape",
            "labels": "--labels",
            "module_path": "--module-path",
        }
        return {field: flag for field, flag in flags.items() if getattr(self, field) not in (None, False)}


# The options each kind of source uses; any other given is refused, not ignored.
APPLIES = {
    "onnx": set(),
    "bert": set(),
    "sklearn": {"trust_pickle", "input_name", "module_path"},
    "pytorch": {"trust_pickle", "input_shape", "labels", "module_path"},
    "keras": {"labels"},
    "savedmodel": {"labels"},
}
KIND_NAMES = {
    "onnx": "an ONNX file",
    "bert": "a BERT checkpoint",
    "sklearn": "a scikit-learn file",
    "pytorch": "a PyTorch file",
    "keras": "a Keras model",
    "savedmodel": "a TensorFlow SavedModel",
}


def kind_of(source: Path) -> str:
    """The kind of ``source``, by what it is (a folder, an extension)."""
    if not source.exists():
        raise SourceError(f"{source} does not exist; expected {SUPPORTED}")
    if source.is_dir():
        from onnxfn.prepare.tensorflow_source import is_saved_model

        if is_bert_checkpoint(source):
            return "bert"
        if is_saved_model(source):
            return "savedmodel"
        raise SourceError(
            f"{source} is a folder but neither a BERT checkpoint nor a SavedModel; supported: {SUPPORTED}"
        )
    suffix = source.suffix.lower()
    kinds = {".onnx": "onnx", ".joblib": "sklearn", ".pkl": "sklearn", ".pickle": "sklearn", ".pt": "pytorch"}
    kind = kinds.get(suffix) or {".pth": "pytorch", ".keras": "keras", ".h5": "keras"}.get(suffix)
    if kind is None:
        raise SourceError(f"{source.name}: unsupported source type {suffix or '(none)'}; supported: {SUPPORTED}")
    return kind


def load_source(source: Path, staging: Path, options: SourceOptions | None = None) -> Source:
    """The fp32 model and its description, whatever kind of source ``source`` is."""
    options = options or SourceOptions()
    kind = kind_of(source)
    refused = [flag for field, flag in options.given().items() if field not in APPLIES[kind]]
    if refused:
        raise SourceError(f"{', '.join(refused)}: not used for {KIND_NAMES[kind]} ({source.name}); leave it out")
    if kind == "bert":
        return from_bert(source, staging)
    if kind == "onnx":
        return from_onnx(source, staging)
    if kind == "sklearn":
        return from_sklearn(source, staging, options)
    if kind == "keras":
        from onnxfn.prepare.keras_source import from_keras

        return from_keras(source, staging, options)
    if kind == "savedmodel":
        from onnxfn.prepare.tensorflow_source import from_saved_model

        return from_saved_model(source, staging, options)
    return from_pytorch(source, staging, options)

"""MLflow model -> ONNX, checked against the original model on its input example before anything is deployed.

The ``onnx``, ``sklearn``, ``pytorch``, ``xgboost`` and ``lightgbm`` flavors go through Ciro's one conversion
registry (:mod:`ciro.convert`): the model is loaded with its flavor's loader, converted (as logged, skl2onnx,
``torch.onnx.export``, onnxmltools), and the ONNX model and the original run on the input example (or random
rows in the signature's shape). Integer, boolean and string outputs (labels) must be equal and float outputs
satisfy ``numpy.allclose(onnx, original, rtol, atol)`` (defaults rtol=1e-4, atol=1e-5: ONNX Runtime computes in
float32 where scikit-learn and LightGBM use float64), else nothing is deployed. ``transformers`` text
classifiers are exported here (:mod:`mlflow_ciro.text`) and checked against the pyfunc's labels and scores.

Errors are Ciro's (``ciro.errors``); the target turns them into ``MlflowException`` at its public methods.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd

from ciro import InputError, InvalidModelError, ModelNotFoundError
from ciro.convert import Tolerance, convert_model

from .inputs import Layout

__all__ = ["ATOL", "RTOL", "SUPPORTED_FLAVORS", "Converted", "convert"]

#: In the order a flavor is picked when the model has several and none is asked for.
SUPPORTED_FLAVORS = ("onnx", "sklearn", "pytorch", "xgboost", "lightgbm", "transformers")
#: Flavors whose models are tables of numbers: one float32 input of the signature's columns, in order.
TABULAR = ("sklearn", "xgboost", "lightgbm")
RTOL, ATOL = 1e-4, 1e-5
EXAMPLE_ROWS = 8


@dataclass(frozen=True)
class Converted:
    flavor: str
    onnx: bytes
    layout: Layout
    #: The ONNX output that equals the original model's prediction (the ``predictions`` column).
    primary_output: str
    #: What the conversion check found: rows compared, largest difference, tolerance.
    check: dict[str, Any]
    #: The processor bundle's files (the tokenizer of a transformers model), attached to the Ciro model.
    bundle: dict[str, bytes] | None = None


def load(model_uri: str) -> tuple[Path, Any]:
    """Download the model's artifacts (a no-op for a local path) and read its MLmodel file."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
        return local, Model.load(str(local))
    except MlflowException as exc:
        raise ModelNotFoundError(f"Cannot load the MLflow model at {model_uri!r}: {exc.message}. Check the URI "
                                 "(models:/m-<id>, models:/<name>/<version>, runs:/<run_id>/<path> or a local "
                                 "folder) and MLFLOW_TRACKING_URI.") from exc
    except OSError as exc:
        raise ModelNotFoundError(f"Cannot load the MLflow model at {model_uri!r}: {exc}. Check the URI "
                                 "(models:/m-<id>, runs:/<run_id>/<path> or a local folder with an MLmodel file)."
                                 ) from exc


def pick_flavor(flavors: dict[str, Any], wanted: str | None, model_uri: str) -> str:
    have = [f for f in flavors if f != "python_function"]
    if wanted is not None and wanted != "python_function":
        if wanted not in SUPPORTED_FLAVORS:
            raise InputError(f"Ciro cannot deploy the {wanted!r} flavor. Supported flavors: "
                             f"{', '.join(SUPPORTED_FLAVORS)} (converted to ONNX). Log the model with one of them, "
                             "e.g. mlflow.onnx.log_model.")
        if wanted not in flavors:
            raise InputError(f"The model at {model_uri!r} has no {wanted!r} flavor (it has {have}). Drop --flavor "
                             "or pick one of those.")
        return wanted
    for f in SUPPORTED_FLAVORS:
        if f in flavors:
            return f
    raise InputError(f"The model at {model_uri!r} has flavor(s) {have}, which Ciro cannot convert to ONNX. "
                     f"Supported flavors: {', '.join(SUPPORTED_FLAVORS)}. Export the model to ONNX and log it with "
                     "mlflow.onnx.")


def convert(model_uri: str, flavor: str | None = None, *, rtol: float = RTOL, atol: float = ATOL,
            zk: bool = False) -> Converted:
    """Convert and check; raises a Ciro error (and deploys nothing) when the model cannot be converted or the ONNX
    model does not reproduce the original's predictions. ``zk``: the deployment serves zk jobs, so the model is
    converted to a circuit EZKL can prove (``ciro.convert.convert_model(..., zk=True)``), or refused saying why."""
    local, meta = load(model_uri)
    chosen = pick_flavor(meta.flavors, flavor, model_uri)
    if chosen == "transformers":
        return _transformers(local, meta, model_uri, atol)
    signature = meta.signature.to_dict() if meta.signature is not None else None
    example = meta.load_input_example(str(local))
    if example is None:
        example = _example_from_signature(meta.signature)
    if example is None and chosen != "onnx":
        raise InputError(f"The model at {model_uri!r} has neither an input example nor a signature, so its ONNX "
                         "conversion cannot be checked. Log it with input_example=... (or signature=...).")
    model, rows, tensor_inputs = _load_flavor(chosen, local, meta, example)
    conv = convert_model(chosen, model, example=rows, tolerance=Tolerance(rtol, atol), source=model_uri, zk=zk)
    sess = ort.InferenceSession(conv.onnx, providers=["CPUExecutionProvider"])
    layout = Layout([{"name": i.name, "dtype": _dtype(i.type), "shape": [d if isinstance(d, int) else None
                                                                          for d in i.shape]}
                     for i in sess.get_inputs()], signature, tensor_inputs)
    if conv.prediction is None:  # an ONNX model: deployed as logged, nothing converted or compared
        return Converted(chosen, conv.onnx, layout, sess.get_outputs()[0].name,
                         {"rows": 0, "note": "an ONNX model: deployed as logged, nothing converted"})
    check = {"rows": conv.details["rows"], "max_abs_error": conv.max_abs_diff, "rtol": rtol, "atol": atol,
             "outputs": list(conv.details["outputs"]),
             "compared": f"onnxruntime vs the original {chosen} model on the input example ({conv.details['tool']})"}
    return Converted(chosen, conv.onnx, layout, conv.prediction, check)


def _load_flavor(flavor: str, local: Path, meta: Any, example: Any) -> tuple[Any, Any, list[str]]:
    """The original model as its flavor loads it, the example rows for the core converter, and (PyTorch) the ONNX
    input names in the signature's order."""
    if flavor == "onnx":
        conf = meta.flavors["onnx"]  # onnx.load resolves external data files beside the model
        return bytes(onnx.load(str(local / conf.get("data", "model.onnx"))).SerializeToString()), None, []
    if flavor == "pytorch":
        import mlflow.pytorch

        names, arrays = _tensors(example, meta.signature)
        return _exportable(mlflow.pytorch.load_model(str(local), map_location="cpu")), dict(zip(
            names, arrays, strict=True)), names
    loader = {"sklearn": "mlflow.sklearn", "xgboost": "mlflow.xgboost", "lightgbm": "mlflow.lightgbm"}[flavor]
    import importlib

    model = importlib.import_module(loader).load_model(str(local))
    return model, {"input": _table(example, meta.signature, model)}, []


def _table(example: Any, signature: Any, model: Any) -> np.ndarray:
    """A tabular model's example as float32 rows, columns in the signature's order (what predict will send)."""
    cols = list(signature.inputs.input_names()) if signature is not None and \
        not signature.inputs.is_tensor_spec() else []
    names = getattr(model, "feature_names_in_", None)
    fitted = [str(c) for c in names] if names is not None else []
    if cols and set(fitted) == set(cols) and fitted != cols:  # (LightGBM keeps sanitized names: not comparable)
        raise InputError(f"The model was fitted on columns {fitted} but its signature lists them as {cols}. Log it "
                         "with an input example (or signature) whose columns are in the training order.")
    if isinstance(example, pd.DataFrame):
        frame = example[cols] if cols and all(c in example.columns for c in cols) else example
        arr = frame.to_numpy(dtype=np.float32)
    else:
        arr = np.asarray(example, dtype=np.float32)
    return arr.reshape(len(arr), -1)


def _tensors(example: Any, signature: Any) -> tuple[list[str], list[np.ndarray]]:
    if isinstance(example, dict):
        names, arrays = list(example), [np.asarray(v) for v in example.values()]
    else:
        spec_names = signature.inputs.input_names() if signature is not None and signature.inputs.has_input_names() \
            else []
        names = list(spec_names) or ["input"]
        arrays = [example.to_numpy(dtype=np.float32) if isinstance(example, pd.DataFrame) else np.asarray(example)]
    return [n if n else f"input_{i}" for i, n in enumerate(names)], arrays


def _dtype(ort_type: str) -> str:
    names = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
             "tensor(int32)": "int32", "tensor(bool)": "bool", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
             "tensor(int8)": "int8", "tensor(string)": "str"}
    return names.get(ort_type, "float32")


def _example_from_signature(signature: Any) -> Any:
    """Random rows in the signature's shape, for a model logged with a signature but no example."""
    if signature is None:
        return None
    rng = np.random.default_rng(0)
    inputs = signature.inputs
    if not inputs.is_tensor_spec():
        return pd.DataFrame({name: rng.standard_normal(EXAMPLE_ROWS) for name in inputs.input_names()})
    arrays = {}
    for i, spec in enumerate(inputs.inputs):
        shape = [EXAMPLE_ROWS if d == -1 else d for d in spec.shape]
        arrays[spec.name or f"input_{i}"] = rng.standard_normal(shape).astype(spec.type)
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays


def _transformers(local: Path, meta: Any, model_uri: str, atol: float) -> Converted:
    """A text-classification pipeline: ONNX logits plus its tokenizer as the processor bundle; checked against the
    pyfunc's labels and scores on the input example."""
    import mlflow.pyfunc

    from .text import TextProcessor, export_text_classifier, texts

    data, bundle = export_text_classifier(local, meta.flavors["transformers"])
    example = meta.load_input_example(str(local))
    sample = texts(example) if example is not None else ["A short example sentence.", "Another, rather longer one."]
    expected = mlflow.pyfunc.load_model(str(local)).predict(sample)
    with tempfile.TemporaryDirectory(prefix="ciro-mlflow-bundle-") as tmp:
        for name, content in bundle.items():
            (Path(tmp) / name).write_bytes(content)
        proc = TextProcessor(Path(tmp))
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        fed = proc.preprocess(sample)
        got = proc.postprocess({"logits": sess.run(["logits"], fed)[0]}, sample)
        inputs = [{"name": i.name, "dtype": _dtype(i.type), "shape": [None, None]} for i in sess.get_inputs()]
    want_labels, want_scores = list(expected["label"]), np.asarray(expected["score"], dtype=np.float64)
    worst = float(np.max(np.abs(np.asarray([g["score"] for g in got]) - want_scores), initial=0.0))
    if [g["label"] for g in got] != want_labels or worst > atol:
        raise InvalidModelError(f"The ONNX conversion of the transformers model at {model_uri!r} does not reproduce "
                                f"its predictions on the input example: labels {[g['label'] for g in got]} vs "
                                f"{want_labels}, scores differ by {worst:.3g} (atol {atol}). Nothing was deployed.")
    layout = Layout(inputs, meta.signature.to_dict() if meta.signature is not None else None)
    check = {"rows": len(sample), "max_abs_error": worst, "atol": atol,
             "compared": "labels and scores: onnxruntime + tokenizer vs the original pyfunc on the input example"}
    return Converted("transformers", data, layout, "logits", check, bundle)


def _exportable_class() -> Any:
    import torch

    class Exportable(torch.nn.Module):
        """Holds the loaded model for the TorchScript exporter. MLflow 3 may load a ``torch.export`` program (a
        GraphModule that refuses ``train()``/``eval()``, which the exporter calls): this wrapper takes the call
        and puts the model in eval mode where it can."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner
            with contextlib.suppress(NotImplementedError):  # an exported program: already inference-only
                inner.eval()

        def train(self, mode: bool = True) -> Exportable:
            self.training = mode
            return self

        def forward(self, *args: Any) -> Any:
            return self.inner(*args)

    return Exportable


def _exportable(inner: Any) -> Any:
    """The model in an :class:`Exportable` (a class made on first use: torch is imported lazily)."""
    return _exportable_class()(inner)

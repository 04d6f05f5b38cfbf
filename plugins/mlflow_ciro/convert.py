"""MLflow model -> ONNX, checked: the converted model must reproduce the original pyfunc's predictions on the
model's input example before anything is deployed.

Flavors: ``onnx`` (as is), ``sklearn`` (skl2onnx), ``pytorch`` (``torch.onnx.export`` with the TorchScript
exporter). Predictions agree when integer/boolean/string outputs are equal and float outputs satisfy
``numpy.allclose(onnx, original, rtol, atol)`` (defaults rtol=1e-4, atol=1e-5: ONNX Runtime computes in float32
where scikit-learn uses float64).
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
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

from .inputs import Layout, feeds

__all__ = ["ATOL", "RTOL", "SUPPORTED_FLAVORS", "Converted", "convert"]

SUPPORTED_FLAVORS = ("onnx", "sklearn", "pytorch", "transformers")
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


def _bad(message: str, code: int = INVALID_PARAMETER_VALUE) -> MlflowException:
    return MlflowException(message, error_code=code)


def load(model_uri: str) -> tuple[Path, Any]:
    """Download the model's artifacts (a no-op for a local path) and read its MLmodel file."""
    import mlflow
    from mlflow.models import Model

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
        return local, Model.load(str(local))
    except MlflowException as exc:
        raise _bad(f"Cannot load the MLflow model at {model_uri!r}: {exc.message}. Check the URI "
                   "(models:/m-<id>, models:/<name>/<version>, runs:/<run_id>/<path> or a local folder) and "
                   "MLFLOW_TRACKING_URI.", RESOURCE_DOES_NOT_EXIST) from exc
    except OSError as exc:
        raise _bad(f"Cannot load the MLflow model at {model_uri!r}: {exc}. Check the URI (models:/m-<id>, "
                   "runs:/<run_id>/<path> or a local folder with an MLmodel file).", RESOURCE_DOES_NOT_EXIST) from exc


def pick_flavor(flavors: dict[str, Any], wanted: str | None, model_uri: str) -> str:
    have = [f for f in flavors if f != "python_function"]
    if wanted is not None and wanted != "python_function":
        if wanted not in SUPPORTED_FLAVORS:
            raise _bad(f"Ciro cannot deploy the {wanted!r} flavor. Supported flavors: {', '.join(SUPPORTED_FLAVORS)} "
                       "(converted to ONNX). Log the model with one of them, e.g. mlflow.onnx.log_model.")
        if wanted not in flavors:
            raise _bad(f"The model at {model_uri!r} has no {wanted!r} flavor (it has {have}). Drop --flavor or "
                       "pick one of those.")
        return wanted
    for f in SUPPORTED_FLAVORS:
        if f in flavors:
            return f
    raise _bad(f"The model at {model_uri!r} has flavor(s) {have}, which Ciro cannot convert to ONNX. Supported "
               f"flavors: {', '.join(SUPPORTED_FLAVORS)}. Export the model to ONNX and log it with mlflow.onnx.")


def convert(model_uri: str, flavor: str | None = None, *, rtol: float = RTOL, atol: float = ATOL) -> Converted:
    """Convert and check; raises ``MlflowException`` (and deploys nothing) when the model cannot be converted
    or the ONNX model does not reproduce the original's predictions."""
    local, meta = load(model_uri)
    chosen = pick_flavor(meta.flavors, flavor, model_uri)
    if chosen == "transformers":
        return _transformers(local, meta, model_uri, atol)
    signature = meta.signature.to_dict() if meta.signature is not None else None
    example = meta.load_input_example(str(local))
    if example is None:
        example = _example_from_signature(meta.signature)
    if example is None and chosen != "onnx":
        raise _bad(f"The model at {model_uri!r} has neither an input example nor a signature, so its ONNX "
                   "conversion cannot be checked. Log it with input_example=... (or signature=...).")
    tensor_inputs: list[str] = []
    if chosen == "onnx":
        data = _onnx(local, meta)
    elif chosen == "sklearn":
        data = _sklearn(local, example, meta.signature)
    else:
        data, tensor_inputs = _pytorch(local, example, meta.signature)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    layout = Layout([{"name": i.name, "dtype": _dtype(i.type), "shape": [d if isinstance(d, int) else None
                                                                          for d in i.shape]}
                     for i in sess.get_inputs()], signature, tensor_inputs)
    if example is None:  # an ONNX model without example or signature: nothing to compare, nothing converted
        return Converted(chosen, data, layout, sess.get_outputs()[0].name,
                         {"rows": 0, "note": "no input example: the ONNX model is deployed as logged"})
    primary, check = _check(local, sess, example, layout, rtol, atol, chosen, model_uri)
    return Converted(chosen, data, layout, primary, check)


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


def _onnx(local: Path, meta: Any) -> bytes:
    conf = meta.flavors["onnx"]
    model = onnx.load(str(local / conf.get("data", "model.onnx")))
    return bytes(model.SerializeToString())


def _n_columns(example: Any, signature: Any) -> int:
    if signature is not None and not signature.inputs.is_tensor_spec():
        return len(signature.inputs.input_names())
    arr = example.to_numpy() if isinstance(example, pd.DataFrame) else np.asarray(example)
    return int(arr.reshape(len(arr), -1).shape[1])


def _sklearn(local: Path, example: Any, signature: Any) -> bytes:
    import mlflow.sklearn
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    model = mlflow.sklearn.load_model(str(local))
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    options = {id(final): {"zipmap": False}} if hasattr(final, "predict_proba") else None
    try:
        proto = convert_sklearn(model, initial_types=[("input", FloatTensorType([None, _n_columns(example,
                                                                                                  signature)]))],
                                options=options)
    except Exception as exc:  # skl2onnx raises bare RuntimeError/NameError for unsupported estimators
        raise _bad(f"skl2onnx cannot convert this scikit-learn model ({type(model).__name__}): {str(exc)[:300]}. "
                   "Use estimators skl2onnx supports, or convert it yourself and log it with mlflow.onnx.") from exc
    return bytes(proto.SerializeToString())


def _pytorch(local: Path, example: Any, signature: Any) -> tuple[bytes, list[str]]:
    import mlflow.pytorch
    import torch

    module = _exportable(mlflow.pytorch.load_model(str(local), map_location="cpu"))
    if isinstance(example, dict):
        names, arrays = list(example), [np.asarray(v) for v in example.values()]
    else:
        spec_names = signature.inputs.input_names() if signature is not None and signature.inputs.has_input_names() \
            else []
        names = list(spec_names) or ["input"]
        arrays = [example.to_numpy(dtype=np.float32) if isinstance(example, pd.DataFrame) else np.asarray(example)]
    names = [n if n else f"input_{i}" for i, n in enumerate(names)]
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    with torch.no_grad():
        out = module(*tensors)
    n_out = len(out) if isinstance(out, tuple | list) else 1
    outputs = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    with tempfile.TemporaryDirectory(prefix="ciro-mlflow-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(module, tensors, str(path), input_names=names, output_names=outputs, dynamo=False,
                              dynamic_axes={n: {0: "batch"} for n in names + outputs}, opset_version=17)
        except Exception as exc:  # the exporter raises many types for unsupported operators and control flow
            raise _bad(f"torch.onnx.export cannot export this PyTorch model: {str(exc).splitlines()[0][:300]}. "
                       "Export it yourself (torch.onnx.export) and log the ONNX file with mlflow.onnx.") from exc
        return path.read_bytes(), names


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
        raise _bad(f"The ONNX conversion of the transformers model at {model_uri!r} does not reproduce its "
                   f"predictions on the input example: labels {[g['label'] for g in got]} vs {want_labels}, scores "
                   f"differ by {worst:.3g} (atol {atol}). Nothing was deployed.")
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


def _check(local: Path, sess: ort.InferenceSession, example: Any, layout: Layout, rtol: float, atol: float,
           flavor: str, model_uri: str) -> tuple[str, dict[str, Any]]:
    """Run the original pyfunc and the ONNX model on the example; return the ONNX output that matches."""
    import mlflow.pyfunc

    expected = mlflow.pyfunc.load_model(str(local)).predict(example)
    fed = feeds(example, layout)
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, fed), strict=True))
    wanted = {str(k): np.asarray(v) for k, v in expected.items()} if isinstance(expected, dict) else {
        "": expected.to_numpy() if isinstance(expected, pd.DataFrame | pd.Series) else np.asarray(expected)}
    rows = len(next(iter(fed.values())))
    worst, primary = np.inf, None
    for label, want in wanted.items():
        candidates = [label] if label in got else names
        for name in candidates:
            err = _difference(got[name], want, rtol, atol)
            if err is not None and err[0]:
                primary = primary or name
                worst = err[1] if worst is np.inf else max(worst, err[1])
                break
        else:
            closest = min((e[1] for n in candidates if (e := _difference(got[n], want, rtol, atol)) is not None),
                          default=np.inf)
            raise _bad(f"The ONNX conversion of the {flavor} model at {model_uri!r} does not reproduce its "
                       f"predictions on the input example ({rows} rows): the closest ONNX output differs by "
                       f"{closest:.3g} (tolerance rtol={rtol}, atol={atol}). Nothing was deployed. Raise the "
                       "tolerance (-C rtol=... -C atol=...) if that difference is acceptable, or log an ONNX model.")
    assert primary is not None
    return primary, {"rows": rows, "max_abs_error": float(worst), "rtol": rtol, "atol": atol,
                     "compared": "onnxruntime vs the original pyfunc on the input example"}


def _difference(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> tuple[bool, float] | None:
    """(agrees, largest absolute difference) when the shapes line up, else None."""
    if got.size != want.size:
        return None
    g, w = got.reshape(want.shape), want
    if w.dtype.kind in "fc" or g.dtype.kind in "fc":
        try:
            gf, wf = g.astype(np.float64), w.astype(np.float64)
        except (TypeError, ValueError):
            return None
        diff = float(np.max(np.abs(gf - wf), initial=0.0))
        return bool(np.allclose(gf, wf, rtol=rtol, atol=atol)), diff
    same = bool(np.array_equal(g.astype(str), w.astype(str)) if w.dtype.kind in "OUS" else np.array_equal(g, w))
    return same, 0.0 if same else float("inf")

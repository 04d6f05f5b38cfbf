"""The built-in converters for ONNX itself, PyTorch (torch.onnx.export) and scikit-learn (skl2onnx).

Loading a pickled model or a full PyTorch module runs code from that file: convert only files you trust (as with
``pickle.load`` and ``torch.load(weights_only=False)`` themselves).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, InvalidModelError
from ._registry import Converter, Example, Tolerance

__all__ = ["BUILTINS", "features_frame", "load_pickle", "one_input"]


def load_pickle(path: Path) -> Any:
    """A pickled (joblib or pickle) model object."""
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # unpickling raises anything
        raise InvalidModelError(f"Cannot load {path.name} as a pickled model ({type(exc).__name__}: {exc}). Save "
                                "it with joblib.dump(model, path) or pickle.") from exc


def one_input(example: Example, what: str) -> tuple[str, np.ndarray]:
    """The single 2-D input a tabular model takes."""
    if len(example) != 1:
        raise InputError(f"A {what} model takes one 2-D array of rows; the example has inputs {list(example)}.")
    name, x = next(iter(example.items()))
    if x.ndim != 2:
        raise InputError(f"A {what} model takes rows of features (a 2-D array); the example has shape {x.shape}.")
    return name, x


def features_frame(model: Any, x: np.ndarray) -> Any:
    """``x`` as a DataFrame with the model's feature names when it was fitted on one (so predict sees the same
    columns and does not warn); else ``x``."""
    names = getattr(model, "feature_names_in_", None)
    if names is None or len(names) != x.shape[1]:
        return x
    try:
        import pandas as pd
    except ImportError:
        return x
    return pd.DataFrame(x, columns=[str(n) for n in names])


# -- ONNX ----------------------------------------------------------------------------------------------------------
def _onnx_bytes(model: Any, example: Example) -> bytes:
    if isinstance(model, bytes | bytearray):
        return bytes(model)
    if hasattr(model, "SerializeToString"):  # an onnx.ModelProto
        return bytes(model.SerializeToString())
    raise InputError(f"The onnx converter takes ONNX bytes or an onnx.ModelProto, not {type(model).__name__}.")


# -- PyTorch -------------------------------------------------------------------------------------------------------
def _load_torch(path: Path) -> Any:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")  # TorchScript
    except (RuntimeError, ValueError):
        try:
            module = torch.load(str(path), map_location="cpu", weights_only=False)  # a whole nn.Module
        except Exception as exc:
            raise InvalidModelError(f"{path} is neither a TorchScript file nor a saved nn.Module ({exc}). Save the "
                                    "whole module (torch.save(model, path)) or torch.jit.script(model).save(path)."
                                    ) from exc
    if not isinstance(module, torch.nn.Module):
        raise InvalidModelError(f"{path} holds a {type(module).__name__}, not a model: a state_dict has no "
                                "architecture. Save the whole module (torch.save(model, path)) or TorchScript.")
    return module


def _torch_outputs(module: Any, example: Example) -> list[np.ndarray]:
    import torch

    with contextlib.suppress(NotImplementedError):  # a torch.export program is inference-only already
        module.eval()
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example.values())
    with torch.no_grad():
        out = module(*tensors)
    outs = [out] if isinstance(out, torch.Tensor) else list(out) if isinstance(out, tuple | list) else None
    if outs is None or not all(isinstance(o, torch.Tensor) for o in outs):
        raise InvalidModelError(f"The model returns a {type(out).__name__}; Ciro converts modules that return a "
                                "tensor or a tuple of tensors. Wrap it in a module that returns tensors.")
    return [o.detach().cpu().numpy() for o in outs]


def _output_names(n: int) -> list[str]:
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def _torch_to_onnx(module: Any, example: Example) -> bytes:
    import torch

    names, outputs = list(example), _output_names(len(_torch_outputs(module, example)))
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example.values())
    with torch.no_grad(), tempfile.TemporaryDirectory(prefix="ciro-convert-") as tmp:
        out = Path(tmp) / "model.onnx"
        torch.onnx.export(module, tensors, str(out), input_names=names, output_names=outputs, dynamo=False,
                          dynamic_axes={n: {0: "batch"} for n in names + outputs}, opset_version=17)
        return out.read_bytes()


def _torch_reference(module: Any, example: Example) -> dict[str | int, np.ndarray]:
    return dict(enumerate(_torch_outputs(module, example)))


# -- scikit-learn --------------------------------------------------------------------------------------------------
def _sk_features(model: Any) -> int | None:
    n = getattr(model, "n_features_in_", None)
    return int(n) if n is not None else None


def _final(model: Any) -> Any:
    return model.steps[-1][1] if hasattr(model, "steps") else model


def _sk_to_onnx(model: Any, example: Example) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    name, x = one_input(example, "scikit-learn")
    final = _final(model)
    # without ZipMap a classifier's probabilities are a plain float tensor (Ciro carries tensors, not maps)
    options = {id(final): {"zipmap": False}} if hasattr(final, "predict_proba") else None
    proto = convert_sklearn(model, initial_types=[(name, FloatTensorType([None, x.shape[1]]))], options=options,
                            target_opset={"": 17, "ai.onnx.ml": 3})
    return bytes(proto.SerializeToString())


def _sk_reference(model: Any, example: Example) -> dict[str | int, np.ndarray]:
    from sklearn.base import is_classifier

    _, x = one_input(example, "scikit-learn")
    rows = features_frame(model, x)
    want: dict[str | int, np.ndarray] = {0: np.asarray(model.predict(rows))}
    if is_classifier(model) and hasattr(_final(model), "predict_proba"):
        want[1] = np.asarray(model.predict_proba(rows))
    return want


BUILTINS = (
    Converter("onnx", (), load=lambda p: p.read_bytes(), to_onnx=_onnx_bytes, dtype=None, tool="none (as it is)"),
    # float32 on both sides, different kernels: differences near zero need an absolute tolerance
    Converter("pytorch", (".pt", ".pth", ".ts"), load=_load_torch, to_onnx=_torch_to_onnx,
              reference=_torch_reference, tolerance=Tolerance(rtol=1e-4, atol=1e-4), dtype=None,
              tool="torch.onnx.export", install="pip install torch", aliases=("torch",)),
    # the original computes in float64, onnxruntime in float32
    Converter("sklearn", (".pkl", ".pickle", ".joblib"), load=load_pickle, to_onnx=_sk_to_onnx,
              reference=_sk_reference, tolerance=Tolerance(rtol=1e-4, atol=1e-5), n_features=_sk_features,
              tool="skl2onnx", install="pip install 'ciro-network[convert]'", aliases=("scikit-learn",)),
)

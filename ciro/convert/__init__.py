"""Models of other frameworks to ONNX, each conversion checked against the original before anything is deployed.

One registry of converters, keyed by framework name, serves every front door: ``CiroClient.deploy_model``, the
MLflow target and the plugins. Built in: ``onnx`` (as it is), ``pytorch`` (torch.onnx.export), ``sklearn``
(skl2onnx), ``xgboost`` and ``lightgbm`` (onnxmltools). Plugins add more through the ``ciro.converters`` entry
point group (name = framework, value = a :class:`Converter` or a callable returning one); a plugin that fails to
load is reported with a warning and skipped.

``convert(framework, path)`` loads a saved model, ``convert_model(framework, model)`` takes a loaded one; both
return checked ONNX bytes. The check runs the original and the ONNX model (onnxruntime) on the same example rows
(the caller's, or seeded random rows as wide as the model's input): float outputs must agree within the
converter's :class:`Tolerance` (``numpy.allclose``), labels exactly. A conversion that differs is refused with
the measured difference (``InvalidModelError``). ``optimize(onnx_bytes, level)`` applies an onnxruntime
optimisation and reports how much the outputs moved.

Loading a pickled model or a full PyTorch module runs code from that file: convert only files you trust.

For zk jobs (``zk=True``) scikit-learn, XGBoost and LightGBM models are written instead as circuits of plain tensor
operators (MatMul, Less, Relu, Softmax, ...) that EZKL can prove (``_circuit``), checked the same way; anything
EZKL could not prove is refused with the reason before anything is deployed.

>>> conv = convert("xgboost", "model.json")         # XGBClassifier/XGBRegressor/Booster
>>> conv.onnx, conv.check, conv.max_abs_diff
>>> circuit = convert("sklearn", "forest.pkl", zk=True)  # for deploy(circuit.onnx, zk=True)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import CiroError, ConfigError, InputError, InvalidModelError
from ._circuit import CIRCUIT_TOOL
from ._optimize import OPTIMIZATIONS, optimize
from ._registry import (
    CHECK_ROWS,
    CONVERTERS,
    DEFAULT_INPUT,
    Converted,
    Converter,
    Example,
    Reference,
    Tolerance,
    check,
    converters,
    get_converter,
    random_rows,
    register,
)

__all__ = [
    "CHECK_ROWS",
    "CONVERTERS",
    "OPTIMIZATIONS",
    "Converted",
    "Converter",
    "Example",
    "Reference",
    "Tolerance",
    "check",
    "convert",
    "convert_model",
    "converters",
    "get_converter",
    "optimize",
    "register",
]

T = TypeVar("T")


def convert(framework: str, path: str | os.PathLike[str], *, example_input: Any = None,
            input_shape: Sequence[int] | None = None, tolerance: Tolerance | None = None,
            zk: bool = False) -> Converted:
    """The model saved at ``path`` as checked ONNX bytes. ``example_input`` (an array, or a dict of arrays by input
    name) or ``input_shape`` (``(batch, ...)``, any batch size) gives the check's rows; a model that knows its
    input width (scikit-learn, XGBoost, LightGBM) needs neither, a PyTorch module one of them. ``zk=True``: a
    circuit EZKL can prove (see :func:`convert_model`)."""
    conv = get_converter(framework)
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"No model file at {p}. Pass the path of a saved {conv.name} model.")
    if conv.suffixes and p.suffix.lower() not in conv.suffixes:
        raise InputError(f"{p.name} is not a {conv.name} model file: Ciro converts {conv.name} models (with "
                         f"{conv.tool}) saved as {', '.join(conv.suffixes)}. Save it in one of those forms, or "
                         "pass the framework that saved it.")
    if input_shape is not None and example_input is None:
        if len(input_shape) < 2:
            raise InputError(f"input_shape={tuple(input_shape)} needs a batch dimension and the rest: (batch, ...), "
                             "e.g. (1, 784).")
        example_input = random_rows(input_shape[1:])
    if example_input is None and conv.reference is not None and conv.n_features is None:
        raise InputError(f"Converting a {conv.name} model needs its input shape: pass input_shape=(batch, ...) (any "
                         "batch size; e.g. (1, 784)) or example_input=an array.")
    model = _step(conv, f"load {p.name}", lambda: conv.load(p))
    return convert_model(conv.name, model, example=example_input, tolerance=tolerance, source=p.name, zk=zk)


def convert_model(framework: str, model: Any, *, example: np.ndarray | Mapping[str, Any] | None = None,
                  tolerance: Tolerance | None = None, source: str | None = None, zk: bool = False) -> Converted:
    """A loaded model object as checked ONNX bytes (see the module docstring). ``example``: an array (the ONNX
    model's one input, named ``x``) or a dict of arrays by input name, in the model's argument order; None makes
    seeded random rows as wide as the model's input. ``tolerance`` overrides the converter's. ``zk=True``: the
    model is for zk jobs, so the result must be a circuit EZKL can prove: the converter's circuit form where it
    has one (scikit-learn, XGBoost, LightGBM: plain tensor operators instead of ``ai.onnx.ml`` ones), checked
    against the original like any conversion, then refused (``ciro.zk.zk_precheck``) if EZKL could not prove it."""
    conv = get_converter(framework)
    tol = tolerance or conv.tolerance
    what = f"{source or type(model).__name__} ({conv.name})"
    ex = _example(conv, model, example) if conv.reference is not None or example is not None else {}
    make, tool = (conv.circuit, CIRCUIT_TOOL) if zk and conv.circuit is not None else (conv.to_onnx, conv.tool)
    if zk and conv.circuit is not None and any(np.isnan(v).any() for v in ex.values() if v.dtype.kind == "f"):
        raise InputError("The example rows hold NaN: a zk circuit has no missing values (see docs/verification.md). "
                         "Check the conversion on rows without NaN, and send such rows to zk jobs only.")
    data = _step(conv, f"convert {what}", lambda: make(model, ex))
    if zk:
        _zk_ready(data, what)
    if conv.reference is None:
        return Converted(data, f"{conv.name}: deployed as it is, nothing converted", details={"framework": conv.name})
    reference = conv.reference
    want = _step(conv, f"run the original {what}", lambda: reference(model, ex))
    diff, details = check(data, ex, want, tol, what=what)
    compared = list(details["outputs"])
    return Converted(
        data, f"{conv.name} {type(model).__name__} -> ONNX ({tool}); its outputs ({', '.join(compared)}) agree "
        f"with the original on {details['rows']} example rows (max abs diff {diff:.2g}; tolerance {tol}, labels "
        "equal)", diff,
        {"framework": conv.name, "tool": tool, "zk": zk, **details}, prediction=compared[0] if compared else None)


def _zk_ready(data: bytes, what: str) -> None:
    """Refuse, before anything is deployed, what EZKL could not prove (its row count needs EZKL on this machine;
    without it the gateway counts them before its set-up)."""
    from importlib.util import find_spec

    from ..zk import zk_precheck

    try:
        zk_precheck(data, count_rows=find_spec("ezkl") is not None)
    except InvalidModelError as exc:
        raise InvalidModelError(f"{what} cannot be deployed for zk: {exc.message} Nothing was deployed.",
                                detail=exc.detail) from exc


def _example(conv: Converter, model: Any, example: np.ndarray | Mapping[str, Any] | None) -> Example:
    if example is None:
        width = conv.n_features
        n = _step(conv, "read the model's input width", lambda: width(model)) if width is not None else None
        if n is None:
            raise InputError(f"Converting this {conv.name} model needs example rows: pass example= (an array, or a "
                             "dict of arrays by input name), or input_shape= to convert().")
        example = random_rows(n)
    items = dict(example) if isinstance(example, Mapping) else {DEFAULT_INPUT: example}
    if not items:
        raise InputError("The example has no inputs: pass an array, or a dict of arrays by input name.")
    try:
        out = {str(k): np.asarray(v) if conv.dtype is None else np.asarray(v, dtype=conv.dtype) for k, v in
               items.items()}
    except (TypeError, ValueError) as exc:
        raise InputError(f"The example input cannot be read as {conv.dtype or 'arrays'} ({exc}). Pass numbers."
                         ) from exc
    rows = {len(v) if v.ndim else 0 for v in out.values()}
    if 0 in rows or len(rows) != 1:
        raise InputError(f"The example inputs need the same number of rows (>= 1) along axis 0; they have "
                         f"{sorted(rows)}.")
    return out


def _step(conv: Converter, doing: str, step: Callable[[], T]) -> T:
    """Run one step of a conversion, turning third-party failures into Ciro errors that say what to do."""
    try:
        return step()
    except CiroError:
        raise
    except ImportError as exc:
        raise ConfigError(f"Converting a {conv.name} model needs {exc.name or exc}, which is not installed: "
                          f"{conv.install or 'install it'}.") from exc
    except Exception as exc:  # converters raise anything for unsupported models and operators
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InvalidModelError(f"Could not {doing} with {conv.tool or conv.name}: {type(exc).__name__}: {first}. "
                                "Nothing was deployed; export the model to ONNX yourself and deploy the ONNX file."
                                ) from exc

"""Models of other frameworks to ONNX, and ONNX optimisations, each checked before anything is deployed.

``convert(framework, path)`` turns a model file into self-contained ONNX bytes and runs the original and
the ONNX model on the same example rows: a conversion whose outputs differ is refused, not deployed.
``optimize(onnx_bytes, level)`` applies an onnxruntime optimisation and reports how much the outputs
moved. The frameworks and levels are the SDK document's (``CiroClient.deploy_model``).

Loading a pickled scikit-learn model or a full PyTorch module runs code from that file: convert only
files you trust (as with ``pickle.load`` and ``torch.load(weights_only=False)`` themselves).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, InputError, InvalidModelError

__all__ = ["FRAMEWORKS", "OPTIMIZATIONS", "Converted", "convert", "optimize"]

#: How many example rows the check runs when the caller gives none.
CHECK_ROWS = 8


@dataclass(frozen=True)
class Converted:
    onnx: bytes
    #: What was checked and how closely the results agreed (shown to the user).
    check: str
    #: Largest absolute difference between the original's and the result's float outputs on the example rows.
    max_abs_diff: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def _example(shape: Sequence[int] | None, rows: int = CHECK_ROWS) -> np.ndarray:
    if not shape:
        raise InputError("Converting this model needs its input shape: pass input_shape=(batch, ...) (any batch "
                         "size; e.g. (1, 784)) or example_input=an array.")
    return np.random.default_rng(0).standard_normal((rows, *[int(d) for d in shape[1:]])).astype(np.float32)


def _onnx_run(data: bytes, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, {sess.get_inputs()[0].name: x})]


def _from_onnx(path: Path, example: np.ndarray | None) -> Converted:
    return Converted(path.read_bytes(), "ONNX file, deployed as it is")


def _from_pytorch(path: Path, example: np.ndarray | None) -> Converted:
    try:
        import torch
    except ImportError as exc:
        raise ConfigError("Converting a PyTorch model needs torch: pip install torch.") from exc
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
    module.eval()
    x = example if example is not None else _example(None)
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        want = module(torch.from_numpy(x))
        out = Path(tmp) / "model.onnx"
        torch.onnx.export(module, (torch.from_numpy(x),), str(out), input_names=["x"], dynamo=False,
                          dynamic_axes={"x": {0: "batch"}}, opset_version=17)
        data = out.read_bytes()
    want_list = [want] if isinstance(want, torch.Tensor) else list(want)
    got = _onnx_run(data, x)
    diff = max(float(np.max(np.abs(w.numpy() - g))) if w.numel() else 0.0 for w, g in zip(want_list, got,
                                                                                         strict=True))
    scale = max(float(np.max(np.abs(w.numpy()))) if w.numel() else 0.0 for w in want_list)
    if not diff <= 1e-4 * max(1.0, scale):
        raise InvalidModelError(f"The ONNX export of {path.name} differs from the PyTorch model by {diff:.3g} on "
                                f"{len(x)} example rows. Nothing was deployed; export it yourself and deploy the ONNX.")
    return Converted(data, f"PyTorch -> ONNX (opset 17); outputs match torch on {len(x)} rows (max abs diff "
                     f"{diff:.2g})", diff)


def _from_sklearn(path: Path, example: np.ndarray | None) -> Converted:
    try:
        import joblib
        from skl2onnx import to_onnx
    except ImportError as exc:
        raise ConfigError("Converting a scikit-learn model needs skl2onnx: pip install 'ciro-network[demo]'.") from exc
    try:
        model = joblib.load(path)
    except Exception as exc:
        raise InvalidModelError(f"Cannot load {path} as a pickled scikit-learn model ({exc}). Save it with "
                                "joblib.dump(model, path) or pickle.") from exc
    n = getattr(model, "n_features_in_", None)
    if n is None and example is None:
        raise InputError(f"{path.name}: the model does not say how many features it takes; pass example_input=.")
    x = example if example is not None else _example((1, int(n)))  # type: ignore[arg-type]
    try:
        onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    except Exception as exc:
        raise InvalidModelError(f"skl2onnx cannot convert {type(model).__name__} ({exc}). Nothing was deployed."
                                ) from exc
    data = onx.SerializeToString()
    got = _onnx_run(data, x)
    labels = np.asarray(model.predict(x))
    same = np.array_equal(labels.reshape(-1), got[0].reshape(-1)) if labels.dtype.kind in "iub" else \
        np.allclose(labels.reshape(-1), got[0].reshape(-1), rtol=1e-4, atol=1e-5)
    if not same:
        raise InvalidModelError(f"The ONNX conversion of {type(model).__name__} predicts differently from the "
                                f"original on {len(x)} example rows. Nothing was deployed.")
    return Converted(data, f"scikit-learn {type(model).__name__} -> ONNX (skl2onnx); the same predictions on "
                     f"{len(x)} rows")


#: framework name -> converter. xgboost, lightgbm and transformers are named so their refusal can say why.
FRAMEWORKS: dict[str, Callable[[Path, np.ndarray | None], Converted] | None] = {
    "onnx": _from_onnx, "pytorch": _from_pytorch, "torch": _from_pytorch, "sklearn": _from_sklearn,
    "scikit-learn": _from_sklearn, "xgboost": None, "lightgbm": None, "transformers": None, "tensorflow": None,
}
_REFUSED = {
    "xgboost": "convert it with onnxmltools (onnxmltools.convert_xgboost) and deploy the ONNX file",
    "lightgbm": "convert it with onnxmltools (onnxmltools.convert_lightgbm) and deploy the ONNX file",
    "transformers": "deploy the model folder with the Hugging Face plugin: `ciro hf deploy FOLDER`",
    "tensorflow": "convert it with tf2onnx and deploy the ONNX file",
}


def convert(framework: str, path: str | os.PathLike[str], *, example_input: np.ndarray | None = None,
            input_shape: Sequence[int] | None = None) -> Converted:
    """The model at ``path`` as checked ONNX bytes (see the module docstring)."""
    name = framework.lower()
    if name not in FRAMEWORKS:
        raise InputError(f"Unknown framework {framework!r}. Use one of: {', '.join(sorted(FRAMEWORKS))}.")
    fn = FRAMEWORKS[name]
    if fn is None:
        raise InputError(f"Ciro does not convert {framework} models itself: {_REFUSED[name]}.")
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"No model file at {p}. Pass the path of a saved {framework} model.")
    example = (np.asarray(example_input, np.float32) if example_input is not None
               else _example(input_shape) if input_shape is not None else None)
    if fn is _from_pytorch and example is None:
        _example(None)  # raises: a PyTorch module does not say what it takes
    return fn(p, example)


#: optimization name -> what it does (all run with onnxruntime before the model is uploaded).
OPTIMIZATIONS = {
    "none": "the model as it is",
    "basic": "onnxruntime's basic graph optimisations (constant folding, redundant node removal), saved offline",
    "all": "onnxruntime's extended and layout optimisations too, saved offline (the result targets onnxruntime's "
           "CPU provider)",
    "int8": "dynamic int8 quantization of the weights (onnxruntime.quantization.quantize_dynamic)",
    "fp16": "float16 weights and activations with float32 inputs and outputs (onnxconverter-common)",
    "tensorrt": "the TensorRT execution provider, where a worker has it",
}


def optimize(data: bytes, level: str, *, example: np.ndarray | None = None) -> Converted:
    """``data`` optimised at ``level``; the outputs' change on example rows is measured and reported."""
    import onnx
    import onnxruntime as ort

    name = (level or "none").lower()
    if name not in OPTIMIZATIONS:
        raise InputError(f"Unknown optimization {level!r}. Use one of: {', '.join(OPTIMIZATIONS)}.")
    if name == "none":
        return Converted(data, "not optimised")
    if name == "tensorrt":
        if "TensorrtExecutionProvider" not in ort.get_available_providers():
            raise InputError("optimization='tensorrt' needs onnxruntime's TensorRT execution provider, which this "
                             f"onnxruntime does not have (it has: {', '.join(ort.get_available_providers())}). Use "
                             "'all', 'int8' or 'fp16', or install onnxruntime-gpu with TensorRT on the workers.")
        raise InputError("optimization='tensorrt' is applied by the worker's execution provider, not to the file: "
                         "deploy with optimization='none' and run the job on a worker with TensorRT (gpu_model=...).")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        src.write_bytes(data)
        if name in ("basic", "all"):
            opts = ort.SessionOptions()
            opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if name == "basic"
                                             else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
            opts.optimized_model_filepath = str(dst)
            ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
        elif name == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        else:
            try:
                from onnxconverter_common import float16
            except ImportError as exc:
                raise ConfigError("optimization='fp16' needs onnxconverter-common: pip install onnxconverter-common."
                                  ) from exc
            onnx.save(float16.convert_float_to_float16(onnx.load_from_string(data), keep_io_types=True), dst)
        out = dst.read_bytes()
    x = example if example is not None else _example_for(data)
    try:
        before, after = _onnx_run(data, x), _onnx_run(out, x)
    except Exception as exc:  # e.g. fp16 kernels onnxruntime's CPU provider lacks
        raise InvalidModelError(f"optimization={level!r} made a model onnxruntime cannot run here ({exc}). Deploy "
                                "with another optimization.") from exc
    diffs = [float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
             for a, b in zip(before, after, strict=True) if a.dtype.kind == "f"]
    diff = max(diffs, default=0.0)
    same_labels = all(np.array_equal(a, b) for a, b in zip(before, after, strict=True) if a.dtype.kind != "f")
    return Converted(out, f"{OPTIMIZATIONS[name]}; on {len(x)} example rows the float outputs moved by at most "
                     f"{diff:.3g}" + ("" if same_labels else "; some integer outputs (labels) changed"), diff,
                     {"labels_unchanged": same_labels})


def _example_for(data: bytes) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()
    if len(inp) != 1 or inp[0].type != "tensor(float)":
        raise InputError("Measuring an optimisation needs example_input= for a model whose input is not a single "
                         "float tensor.")
    shape = [d if isinstance(d, int) else 1 for d in inp[0].shape]
    return _example(shape, rows=inp[0].shape[0] if shape and isinstance(inp[0].shape[0], int) else CHECK_ROWS)

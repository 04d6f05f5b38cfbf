"""ONNX optimisations applied before upload, each measured: how far the outputs moved on example rows."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError, InvalidModelError
from ._registry import CHECK_ROWS, DEFAULT_INPUT, Converted, onnx_run, random_rows

__all__ = ["OPTIMIZATIONS", "optimize"]

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
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        if name == "fp16":
            raise ConfigError("optimization='fp16' needs onnxconverter-common: pip install "
                              "'ciro-network[convert]'.") from exc
    with tempfile.TemporaryDirectory(prefix="ciro-optimize-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        src.write_bytes(data)
        try:
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
                onnx.save(float16.convert_float_to_float16(onnx.load_from_string(data), keep_io_types=True), dst)
        except Exception as exc:  # the quantizer and the converters raise their own untyped errors
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise InvalidModelError(f"optimization={level!r} cannot be applied to this model ({first}). Deploy "
                                    "with another optimization, or none.") from exc
        out = dst.read_bytes()
    feeds = _feeds(data, example)
    try:
        before, after = list(onnx_run(data, feeds).values()), list(onnx_run(out, feeds).values())
    except Exception as exc:  # e.g. fp16 kernels onnxruntime's CPU provider lacks
        raise InvalidModelError(f"optimization={level!r} made a model onnxruntime cannot run here ({exc}). Deploy "
                                "with another optimization.") from exc
    diffs = [float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
             for a, b in zip(before, after, strict=True) if a.dtype.kind == "f"]
    diff = max(diffs, default=0.0)
    same_labels = all(np.array_equal(a, b) for a, b in zip(before, after, strict=True) if a.dtype.kind != "f")
    rows = len(next(iter(feeds.values())))
    return Converted(out, f"{OPTIMIZATIONS[name]}; on {rows} example rows the float outputs moved by at most "
                     f"{diff:.3g}" + ("" if same_labels else "; some integer outputs (labels) changed"), diff,
                     {"optimization": name, "rows": rows, "max_abs_diff": diff, "labels_unchanged": same_labels})


def _feeds(data: bytes, example: np.ndarray | None) -> dict[str, np.ndarray]:
    """The example rows by input name: the given array, or random rows shaped by the model's one float input."""
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()
    if example is not None and len(inp) == 1:
        return {inp[0].name: np.asarray(example)}
    if len(inp) != 1 or inp[0].type != "tensor(float)":
        raise InputError("Measuring an optimisation needs example_input= for a model whose input is not a single "
                         "float tensor.")
    shape = [d if isinstance(d, int) else 1 for d in inp[0].shape]
    fixed = shape and isinstance(inp[0].shape[0], int)
    return {inp[0].name or DEFAULT_INPUT: random_rows(shape[1:], rows=shape[0] if fixed else CHECK_ROWS)}

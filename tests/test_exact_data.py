"""Every value of every dtype Ciro carries survives each wire path bit for bit (docs/encoding.md):
±inf, NaN with any payload, -0.0 and subnormals included, and integers at their dtype's limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ciro import (
    CiroClient,
    InputError,
    JobResult,
    JobStatus,
    canonical_bytes,
    commitment,
    decode_binary,
    decode_canonical,
    decode_json,
    encode_binary,
    encode_json,
    verify,
)
from ciro.tensors import SUPPORTED_DTYPES
from ciro_ray.schemas import JobRequest

_BITS = {2: np.uint16, 4: np.uint32, 8: np.uint64}


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(SUPPORTED_DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    if dtype.kind == "f":  # every bit pattern: NaN payloads, ±inf, -0.0, subnormals
        bits = draw(hnp.arrays(_BITS[dtype.itemsize], shape))
        special = draw(st.sampled_from([None, np.inf, -np.inf, np.nan, -0.0]))
        arr = bits.view(dtype)
        if special is not None and arr.size:
            arr.flat[0] = special
        return arr
    return draw(hnp.arrays(dtype, shape))


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


_FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(arr=tensors(), list_limit=st.sampled_from([0, 4096]))
def test_json_paths_are_bit_exact(arr: np.ndarray, list_limit: int) -> None:
    t = {"x": arr}
    wire = encode_json(t, list_limit=list_limit)
    _same(t, decode_json(orjson.loads(orjson.dumps(wire))))  # the SDK and the gateway (orjson)
    _same(t, decode_json(json.loads(json.dumps(wire, allow_nan=False))))  # standard JSON, no NaN literals
    body = orjson.dumps({"model": "m", "inputs": wire})  # through the gateway's request schema
    parsed = JobRequest.model_validate_json(body)
    _same(t, decode_json({k: v.model_dump(exclude_none=True) for k, v in parsed.inputs.items()}))


@_FAST
@given(arr=tensors())
def test_binary_and_canonical_paths_are_bit_exact(arr: np.ndarray) -> None:
    t = {"x": arr, "y": arr[..., :1] if arr.ndim else arr}
    _same(t, decode_canonical(canonical_bytes(t)))
    _same(t, decode_binary(encode_binary(t)))


@_FAST
@given(arr=tensors())
def test_a_saved_result_keeps_its_outputs_and_commitment(arr: np.ndarray) -> None:
    r = JobResult(job_id="0" * 32, model_hash="a" * 64, status=JobStatus.DONE, input_commitment="b" * 64,
                  output_commitment=commitment({"y": arr}), outputs={"y": arr})
    back = JobResult.from_wire(json.loads(json.dumps(r.to_dict(), allow_nan=False)))  # `ciro infer --out`
    assert back.outputs is not None
    _same({"y": arr}, back.outputs)
    assert commitment(back.outputs) == r.output_commitment


def test_non_finite_floats_travel_as_bytes_and_finite_ones_as_numbers() -> None:
    wire = encode_json({"a": np.array([np.inf, -np.inf, 1.0], np.float32), "b": np.array([-0.0, 1.5], np.float32)})
    assert "b64" in wire["a"] and "data" not in wire["a"]
    assert wire["b"]["data"] == [-0.0, 1.5] and str(wire["b"]["data"][0]) == "-0.0"
    text = {"x": {"dtype": "float32", "shape": [3], "data": ["inf", "-inf", "nan"]}}  # hand-written JSON
    got = decode_json(text)["x"]
    assert np.isposinf(got[0]) and np.isneginf(got[1]) and np.isnan(got[2])


@pytest.mark.parametrize(("entry", "message"), [
    ({"dtype": "float32", "shape": [2], "data": [None, 1.0]}, "null"),  # was read as NaN
    ({"dtype": "int64", "shape": [1], "data": [1.5]}, "fractional"),  # was truncated to 1
    ({"dtype": "int64", "shape": [1], "data": [2**64]}, "cannot be decoded"),
    ({"dtype": "uint8", "shape": [1], "data": [300]}, "cannot be decoded"),
    ({"dtype": "bool", "shape": [1], "data": [2]}, "true/false"),  # was read as True
])
def test_values_the_dtype_cannot_hold_are_refused(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        decode_json({"x": entry})


def _exp_model(path: Path) -> Path:
    """y = exp(x) and z = x (an identity: every input bit pattern must come back unchanged)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 6]) for n in ("y", "z")]
    graph = helper.make_graph([helper.make_node("Exp", ["x"], ["y"]), helper.make_node("Identity", ["x"], ["z"])],
                              "exp", [x], outs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_inf_nan_and_negative_zero_survive_a_real_job_and_verify(client: CiroClient, tmp_path: Path) -> None:
    """An exp(x) model at x = 100 gives inf: the result used to say nan, and `ciro verify` then rejected the
    honest result; an input [inf, -inf, ...] used to run as [nan, nan, ...]."""
    path = _exp_model(tmp_path / "exp.onnx")
    model = client.deploy(path)
    nan_payload = np.array([0x7FC0_1234], np.uint32).view(np.float32)[0]
    x = np.array([[100.0, np.inf, -np.inf, -0.0, nan_payload, 1e-45]], np.float32)
    want = ort.InferenceSession(str(path)).run(None, {"x": x})
    for result in (client.infer(model.hash, x), client.infer_batch(model.hash, x)[0]):  # JSON, then binary
        assert result.outputs is not None
        assert result.outputs["z"].tobytes() == x.tobytes()  # identity: bit for bit, NaN payload included
        assert result.outputs["y"].tobytes() == want[0].tobytes()
        assert np.isposinf(result.outputs["y"][0, 0])
        report = verify(result, inputs={"x": x}, model=path)
        assert report.valid, report.text()

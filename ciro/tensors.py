"""Tensors on the wire, their canonical encoding, and content hashes.

Two wire forms keep dtype and shape exactly:

* JSON, for small payloads: ``{"name": {"dtype": "float32", "shape": [1, 64], "data": [...]}}``
  with ``data`` the C-order flat list, or ``"b64"`` holding the raw little-endian bytes instead.
* Binary: safetensors bytes (``application/vnd.ciro.safetensors``), for large payloads.

The canonical encoding and the commitments built on it are specified in ``docs/encoding.md``;
receipts and proofs sign and prove exactly these bytes, so change them only with a version bump.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "BINARY_CONTENT_TYPE",
    "CANONICAL_MAGIC",
    "SUPPORTED_DTYPES",
    "canonical_bytes",
    "commitment",
    "decode_binary",
    "decode_canonical",
    "decode_json",
    "dtype_name",
    "encode_binary",
    "encode_json",
    "model_hash",
]

BINARY_CONTENT_TYPE = "application/vnd.ciro.safetensors"
CANONICAL_MAGIC = b"CIRO-TENSORS-V1\x00"
_SCALARS = "ciro.scalars"
#: Above this many elements, :func:`encode_json` sends base64 bytes instead of a number list.
JSON_LIST_LIMIT = 4096

SUPPORTED_DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
)

_LE = {name: np.dtype(name).newbyteorder("<") for name in SUPPORTED_DTYPES}
# dtype -> name by dict lookup: numpy's dtype.name is surprisingly slow on the hot path.
_NAMES = {np.dtype(name).newbyteorder(order): name for name in SUPPORTED_DTYPES for order in ("<", ">", "=")}


def dtype_name(dtype: np.dtype) -> str | None:
    """The Ciro dtype name of a numpy dtype (any byte order), or None if Ciro does not carry it."""
    return _NAMES.get(dtype)

Tensors = dict[str, np.ndarray]


def model_hash(onnx_bytes: bytes) -> str:
    """A model's identity: SHA-256 of its (self-contained) ONNX bytes, lowercase hex."""
    return hashlib.sha256(onnx_bytes).hexdigest()


def _dtype(name: Any, where: str) -> np.dtype:
    if not isinstance(name, str) or name not in SUPPORTED_DTYPES:
        raise InputError(
            f"Tensor {where!r} has unsupported dtype {name!r}. Use one of: {', '.join(SUPPORTED_DTYPES)}."
        )
    return _LE[name]


def _as_array(name: str, value: Any) -> np.ndarray:
    arr = value if type(value) is np.ndarray else np.asarray(value)
    if arr.dtype not in _NAMES:
        raise InputError(
            f"Input {name!r} has dtype {arr.dtype} which Ciro does not carry. "
            f"Convert it to one of: {', '.join(SUPPORTED_DTYPES)} (e.g. x.astype(np.float32))."
        )
    return arr


def canonical_bytes(tensors: Mapping[str, Any]) -> bytes:
    """The canonical encoding of named tensors (see ``docs/encoding.md``)."""
    parts = [CANONICAL_MAGIC, struct.pack("<I", len(tensors))]
    for name in sorted(tensors, key=lambda n: n.encode("utf-8")):
        arr = _as_array(name, tensors[name])
        name_b = name.encode("utf-8")
        dname = _NAMES[arr.dtype]
        dtype_b = dname.encode("ascii")
        data = np.ascontiguousarray(arr, dtype=_LE[dname]).tobytes()
        parts += [
            struct.pack("<I", len(name_b)), name_b,
            struct.pack("<B", len(dtype_b)), dtype_b,
            struct.pack("<I", arr.ndim), struct.pack(f"<{arr.ndim}Q", *arr.shape),
            struct.pack("<Q", len(data)), data,
        ]
    return b"".join(parts)


def decode_canonical(data: bytes) -> Tensors:
    """Inverse of :func:`canonical_bytes` (the job store keeps tensors in this form)."""
    view = memoryview(data)
    if bytes(view[:len(CANONICAL_MAGIC)]) != CANONICAL_MAGIC:
        raise InputError("Not a CIRO-TENSORS-V1 encoding (bad magic). See docs/encoding.md.")
    try:
        pos = len(CANONICAL_MAGIC)
        (count,) = struct.unpack_from("<I", view, pos)
        pos += 4
        out: Tensors = {}
        for _ in range(count):
            (n,) = struct.unpack_from("<I", view, pos)
            name = bytes(view[pos + 4:pos + 4 + n]).decode("utf-8")
            pos += 4 + n
            d = view[pos]
            dtype = _dtype(bytes(view[pos + 1:pos + 1 + d]).decode("ascii"), name)
            pos += 1 + d
            (ndim,) = struct.unpack_from("<I", view, pos)
            shape = struct.unpack_from(f"<{ndim}Q", view, pos + 4)
            pos += 4 + 8 * ndim
            (size,) = struct.unpack_from("<Q", view, pos)
            pos += 8
            if size != math.prod(shape) * dtype.itemsize or pos + size > len(view):
                raise InputError(f"Tensor {name!r}: data length does not match its shape {list(shape)}.")
            out[name] = np.frombuffer(view[pos:pos + size], dtype=dtype).reshape(shape).astype(
                dtype.newbyteorder("="), copy=False)
            pos += size
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise InputError(f"Truncated or corrupt CIRO-TENSORS-V1 encoding: {exc}.") from exc
    if pos != len(view):
        raise InputError("Trailing bytes after a CIRO-TENSORS-V1 encoding.")
    return out


def commitment(tensors: Mapping[str, Any]) -> str:
    """SHA-256 of :func:`canonical_bytes`, lowercase hex: the input/output commitment."""
    return hashlib.sha256(canonical_bytes(tensors)).hexdigest()


def encode_json(tensors: Mapping[str, Any], *, list_limit: int = JSON_LIST_LIMIT) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in tensors.items():
        arr = _as_array(name, value)
        entry: dict[str, Any] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape)}
        # JSON numbers cannot hold inf or NaN (orjson writes null, which reads back as NaN) nor a NaN's payload:
        # such tensors travel as their exact bytes.
        if arr.size <= list_limit and (arr.dtype.kind != "f" or bool(np.isfinite(arr).all())):
            entry["data"] = arr.reshape(-1).tolist()
        else:
            raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            entry["b64"] = base64.b64encode(raw).decode("ascii")
        out[name] = entry
    return out


def decode_json(obj: Any) -> Tensors:
    if not isinstance(obj, dict) or not obj:
        raise InputError(
            'Inputs must be a JSON object of named tensors, e.g. {"x": {"dtype": "float32", '
            '"shape": [1, 4], "data": [0, 1, 2, 3]}}.'
        )
    out: Tensors = {}
    for name, entry in obj.items():
        if not isinstance(entry, dict) or "dtype" not in entry or "shape" not in entry:
            raise InputError(f'Tensor {name!r} needs "dtype", "shape" and "data" (or "b64") fields.')
        dtype = _dtype(entry["dtype"], name)
        shape = entry["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InputError(f"Tensor {name!r} has an invalid shape {shape!r}: use a list of non-negative ints.")
        count = math.prod(shape)
        try:
            if "b64" in entry:
                raw = base64.b64decode(entry["b64"], validate=True)
                if len(raw) != count * dtype.itemsize:
                    raise InputError(
                        f"Tensor {name!r}: {len(raw)} bytes of data for shape {shape} and dtype "
                        f"{dtype.name} (expected {count * dtype.itemsize})."
                    )
                arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
            else:
                data = entry.get("data")
                if not isinstance(data, list):
                    raise InputError(f'Tensor {name!r} needs a "data" list or a "b64" string.')
                _check_values(name, data, dtype)
                arr = np.asarray(data, dtype=dtype)
                if arr.size != count:
                    raise InputError(
                        f"Tensor {name!r}: {arr.size} values for shape {shape} (expected {count}). "
                        "Send the flat C-order list of values."
                    )
                arr = arr.reshape(shape)
        except (ValueError, TypeError, OverflowError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"Tensor {name!r} cannot be decoded as {dtype.name}: {exc}.") from exc
        out[str(name)] = arr.astype(dtype.newbyteorder("="), copy=False)
    return out


def _check_values(name: str, data: list[Any], dtype: np.dtype) -> None:
    """Refuse values numpy would silently change: null (read as NaN), 1.5 as an integer, 2 as a bool."""
    if None in data:
        raise InputError(f"Tensor {name!r} holds null, which is not a number. Send inf/-inf/NaN as the strings "
                         '"inf", "-inf", "nan", or the exact bytes as "b64".')
    if dtype.kind == "b":
        if any(v not in (0, 1) or isinstance(v, str) for v in data):
            raise InputError(f"Tensor {name!r} is bool: send true/false (or 0/1), not other values.")
    elif dtype.kind in "iu" and any(isinstance(v, float) and not v.is_integer() for v in data):
        raise InputError(f"Tensor {name!r} is {dtype.name} but holds a fractional number. Send whole numbers, or "
                         "declare a float dtype.")


def encode_binary(tensors: Mapping[str, Any]) -> bytes:
    from safetensors.numpy import save

    given = {n: _as_array(n, v) for n, v in tensors.items()}
    arrays = {n: np.ascontiguousarray(a) for n, a in given.items()}  # (a 0-d array comes back with shape (1,))
    scalars = sorted(n for n, a in given.items() if a.ndim == 0)
    # safetensors writes a 0-d tensor with shape [1]; the metadata says which ones were 0-d.
    return save(arrays, metadata={_SCALARS: json.dumps(scalars)} if scalars else None)


def decode_binary(data: bytes) -> Tensors:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        out = load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise InputError(
            f"Body is not valid safetensors bytes ({exc}). Send safetensors "
            f"(safetensors.numpy.save) with Content-Type {BINARY_CONTENT_TYPE}, or JSON."
        ) from exc
    if not out:
        raise InputError("The safetensors payload holds no tensors. Send at least one named input.")
    for name, arr in out.items():
        _as_array(name, arr)
    for name in _scalar_names(data):
        if name in out and out[name].size == 1:
            out[name] = out[name].reshape(())
    return out


def _scalar_names(data: bytes) -> list[str]:
    """The 0-d tensors :func:`encode_binary` recorded in the header's metadata (the loader checked the header)."""
    (n,) = struct.unpack_from("<Q", data, 0)
    meta = json.loads(bytes(data[8:8 + n])).get("__metadata__") or {}
    try:
        names = json.loads(meta.get(_SCALARS, "[]"))
    except ValueError:
        return []
    return [x for x in names if isinstance(x, str)] if isinstance(names, list) else []

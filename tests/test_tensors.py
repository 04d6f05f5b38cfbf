import hashlib
import struct

import numpy as np
import pytest

from ciro import (
    InputError,
    canonical_bytes,
    commitment,
    decode_binary,
    decode_json,
    encode_binary,
    encode_json,
    model_hash,
)
from ciro.tensors import SUPPORTED_DTYPES


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES)
def test_json_and_binary_round_trip_keep_dtype_shape_and_values(dtype: str) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.random((2, 3, 4)) * 100).astype(dtype)
    for encoded in (encode_json({"t": arr}), encode_json({"t": arr}, list_limit=0)):  # list and base64 forms
        back = decode_json(encoded)["t"]
        assert back.dtype == arr.dtype and back.shape == arr.shape
        np.testing.assert_array_equal(back, arr)
    back = decode_binary(encode_binary({"t": arr}))["t"]
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


def test_float_json_round_trip_is_bit_exact() -> None:
    arr = np.array([0.1, 1 / 3, np.float32(np.pi), -0.0, 1e-38], dtype=np.float32)
    back = decode_json(encode_json({"x": arr}))["x"]
    assert back.tobytes() == arr.tobytes()


def test_canonical_encoding_matches_the_documented_layout() -> None:
    # docs/encoding.md: magic, count, then per tensor (sorted by name) name, dtype, dims, data.
    a = np.array([[1, 2]], dtype=np.int64)
    expected = (b"CIRO-TENSORS-V1\x00" + struct.pack("<I", 1) + struct.pack("<I", 1) + b"a"
                + struct.pack("<B", 5) + b"int64" + struct.pack("<I", 2) + struct.pack("<2Q", 1, 2)
                + struct.pack("<Q", 16) + struct.pack("<2q", 1, 2))
    assert canonical_bytes({"a": a}) == expected
    assert commitment({"a": a}) == hashlib.sha256(expected).hexdigest()


def test_commitment_ignores_dict_order_and_memory_layout_but_not_content() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = np.ones(3, dtype=np.int32)
    base = commitment({"x": x, "y": y})
    assert commitment({"y": y, "x": x}) == base
    assert commitment({"x": np.asfortranarray(x), "y": y}) == base
    assert commitment({"x": x.astype(np.float64), "y": y}) != base  # dtype is bound
    assert commitment({"x": x.reshape(3, 2), "y": y}) != base  # shape is bound
    x2 = x.copy()
    x2[0, 0] = 0.5
    assert commitment({"x": x2, "y": y}) != base
    assert commitment({"z": x, "y": y}) != base  # names are bound


def test_model_hash_is_sha256_of_bytes() -> None:
    assert model_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({}, "JSON object of named tensors"),
        ([1, 2], "JSON object of named tensors"),
        ({"x": [1, 2]}, "dtype"),
        ({"x": {"dtype": "complex64", "shape": [1], "data": [1]}}, "unsupported dtype"),
        ({"x": {"dtype": "float32", "shape": [2, 2], "data": [1, 2, 3]}}, "3 values for shape [2, 2]"),
        ({"x": {"dtype": "float32", "shape": [-1], "data": []}}, "invalid shape"),
        ({"x": {"dtype": "float32", "shape": [2], "b64": "AAAA"}}, "bytes of data"),
        ({"x": {"dtype": "int8", "shape": [1], "data": ["a"]}}, "cannot be decoded"),
    ],
)
def test_bad_json_tensors_raise_input_error(payload: object, needle: str) -> None:
    with pytest.raises(InputError, match=None) as info:
        decode_json(payload)
    assert needle in str(info.value)


def test_bad_binary_payload_raises_input_error() -> None:
    with pytest.raises(InputError, match="safetensors"):
        decode_binary(b"not safetensors at all")


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES)
def test_canonical_decoding_inverts_encoding(dtype: str) -> None:
    from ciro import decode_canonical

    tensors = {"b": np.arange(6).astype(dtype).reshape(3, 2), "a": np.zeros((0, 4), dtype), "é": np.array(1, dtype)}
    back = decode_canonical(canonical_bytes(tensors))
    assert list(back) == sorted(tensors, key=lambda n: n.encode())
    for name, arr in tensors.items():
        assert back[name].dtype == arr.dtype and back[name].shape == arr.shape
        np.testing.assert_array_equal(back[name], arr)


def test_corrupt_canonical_bytes_raise_input_error() -> None:
    from ciro import decode_canonical

    good = canonical_bytes({"x": np.ones((2, 2), np.float32)})
    for bad in (b"nope", good[:-1], good + b"\x00", good[:20]):
        with pytest.raises(InputError):
            decode_canonical(bad)

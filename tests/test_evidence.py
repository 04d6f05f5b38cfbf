"""Identities, signed receipts and offline verification (unit level; end to end in test_e2e_sdk)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from ciro import (
    ConfigError,
    Identity,
    JobResult,
    JobStatus,
    KeyStore,
    Receipt,
    VerificationLevel,
    commitment,
    sign_receipt,
    verify,
)
from ciro.identity import sign_felt, verify_felt
from ciro.receipts import RECEIPT_DOMAIN, short_string


def test_keystore_files_are_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "keys")
    ident = ks.new("alice")
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / "alice.json").st_mode) == 0o600
    assert ks.get("alice") == ident
    with pytest.raises(ConfigError, match="already exists"):
        ks.new("alice")
    assert ks.get_or_create("bob").public_key != ident.public_key
    assert [i.name for i in ks.list()] == ["alice", "bob"]
    with pytest.raises(ConfigError, match="ciro keys new carol"):
        ks.get("carol")
    with pytest.raises(ConfigError, match="Invalid key name"):
        ks.new("../escape")
    assert hex(ident.private_key) not in repr(ident)


def test_keys_and_signatures_are_starknet_compatible() -> None:
    from starknet_py.hash.utils import message_signature, verify_message_signature
    from starknet_py.net.signer.key_pair import KeyPair

    ident = Identity.generate("w")
    assert KeyPair.from_private_key(ident.private_key).public_key == ident.public_key
    msg = 0x3A4B5C6D7E8F9A0B1C2D3E4F5A6B7C8D9E0F1A2B3C4D5E6F7A8B9C0D1E2F3A4
    r, s = sign_felt(ident.private_key, msg)
    assert verify_message_signature(msg, [r, s], ident.public_key)  # ours, checked by starknet-py
    r2, s2 = message_signature(msg, ident.private_key)
    assert verify_felt(ident.public_key, msg, r2, s2)  # starknet-py's, checked by ours
    assert not verify_felt(ident.public_key, msg + 1, r, s)
    assert not verify_felt(ident.public_key, msg, r, s + 1)


def _receipt(ident: Identity, **over: object) -> Receipt:
    fields = {"job_id": "ab" * 16, "model_hash": "11" * 32, "input_commitment": "22" * 32,
              "output_commitment": "33" * 32, "level": "receipt", "timestamp_ms": 1_700_000_000_000}
    fields.update(over)  # type: ignore[arg-type]
    return sign_receipt(ident, **fields)  # type: ignore[arg-type]


def test_receipt_message_is_poseidon_over_the_documented_felts() -> None:
    from poseidon_py.poseidon_hash import poseidon_hash_many

    ident = Identity.generate("w")
    rc = _receipt(ident)
    felts = [short_string("CIRO_RECEIPT_V1"), int("ab" * 16, 16), int("11" * 16, 16), int("11" * 16, 16),
             int("22" * 16, 16), int("22" * 16, 16), int("33" * 16, 16), int("33" * 16, 16), ident.public_key,
             short_string("receipt"), 1_700_000_000_000]
    assert felts[0] == RECEIPT_DOMAIN
    assert rc.message() == poseidon_hash_many(felts)
    assert Receipt.from_dict(json.loads(json.dumps(rc.to_dict()))) == rc
    assert rc.signature_valid()


@pytest.mark.parametrize("field", ["job_id", "model_hash", "input_commitment", "output_commitment", "level",
                                   "timestamp_ms", "worker_key", "signature"])
def test_changing_any_receipt_field_breaks_the_signature(field: str) -> None:
    ident = Identity.generate("w")
    d = _receipt(ident).to_dict()
    other = {"job_id": "cd" * 16, "model_hash": "44" * 32, "input_commitment": "55" * 32,
             "output_commitment": "66" * 32, "level": "quorum", "timestamp_ms": d["timestamp_ms"] + 1,
             "worker_key": Identity.generate("x").public_hex, "signature": [d["signature"][0], hex(12345)]}
    d[field] = other[field]
    assert not Receipt.from_dict(d).signature_valid()


def _result(ident: Identity) -> tuple[JobResult, dict[str, np.ndarray], bytes]:
    model = b"pretend these are onnx bytes"
    import hashlib

    inputs = {"x": np.arange(4, dtype=np.float32).reshape(1, 4)}
    outputs = {"y": np.array([[0.25, 0.75]], dtype=np.float32)}
    ic, oc, mh = commitment(inputs), commitment(outputs), hashlib.sha256(model).hexdigest()
    rc = sign_receipt(ident, job_id="0f" * 16, model_hash=mh, input_commitment=ic, output_commitment=oc,
                      level="receipt")
    res = JobResult(job_id="0f" * 16, model_hash=mh, status=JobStatus.DONE, input_commitment=ic,
                    output_commitment=oc, outputs=outputs, verification=VerificationLevel.RECEIPT, receipt=rc)
    return res, inputs, model


def test_verify_accepts_an_honest_result_and_names_each_tampering() -> None:
    ident = Identity.generate("w")
    res, inputs, model = _result(ident)
    ok = verify(res, inputs=inputs, model=model, trusted_workers=[ident.public_hex])
    assert ok.valid, ok.text()
    assert "not that the output is correct" in ok.proves

    def failing(d: dict, **kw: object) -> set[str]:
        return {c.name for c in verify(d, **kw).failures}  # type: ignore[arg-type]

    base = res.to_dict()
    d = json.loads(json.dumps(base))
    d["outputs"]["y"]["data"][0] = 0.5  # one output value
    assert failing(d) == {"output commitment"}
    assert failing(base, inputs={"x": inputs["x"] + 1}) == {"input commitment"}  # one input value
    assert failing(base, model=model + b"!") == {"model hash"}  # another model
    d = json.loads(json.dumps(base))
    d["receipt"]["signature"][1] = hex(int(d["receipt"]["signature"][1], 16) ^ 1)  # the signature
    assert failing(d) == {"receipt signature"}
    d = json.loads(json.dumps(base))
    d["receipt"]["worker_key"] = Identity.generate("mallory").public_hex  # the worker address
    assert failing(d) == {"receipt signature"}
    assert failing(base, trusted_workers=[Identity.generate("z").public_hex]) == {"worker key"}
    d = json.loads(json.dumps(base))  # outputs, commitment and receipt rewritten together: signature fails
    d["outputs"]["y"]["data"][0] = 0.5
    d["output_commitment"] = d["receipt"]["output_commitment"] = commitment(
        {"y": np.array([[0.5, 0.75]], np.float32)})
    assert failing(d) == {"receipt signature"}
    d = json.loads(json.dumps(base))
    d["receipt"] = None
    assert failing(d) == {"receipt"}


def test_verify_says_which_worker_keys_it_trusted() -> None:
    ident = Identity.generate("w")
    res, inputs, model = _result(ident)
    untrusted = verify(res, inputs=inputs, model=model)
    assert untrusted.valid  # a receipt level result: the signer's key is a caveat, not a failure
    [note] = [n for n in untrusted.notes if "worker-key" in n]
    assert note.startswith(f"the receipt's signer {ident.public_hex[:18]}... was not checked against any key you "
                           "trust") and "any key can sign a receipt" in note
    trusted = verify(res, inputs=inputs, model=model, trusted_workers=[ident.public_hex])
    assert trusted.valid and not trusted.notes and "worker key" in {c.name for c in trusted.checks}
    assert "NOTE: the receipt's signer" in untrusted.text() and "NOTE" not in trusted.text()

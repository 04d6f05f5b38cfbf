"""Identities, signed receipts and offline verification (unit level; end to end in test_e2e_sdk)."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
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
from ciro.receipts import MERKLE_SCHEME, RECEIPT_DOMAIN, JobLeaf, short_string, sign_batch


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


# -- Merkle receipts: one signature a batch ----------------------------------------------------------------------
def _batch(ident: Identity, n: int = 5, *, price: int = 0) -> tuple[list[JobResult], list[Receipt]]:
    """``n`` results whose receipts are one batch signed by ``ident``."""
    results, leaves = [], []
    for i in range(n):
        outputs = {"y": np.array([[i, 1.0 - i]], dtype=np.float32)}
        jid, ic, oc = f"{i + 1:032x}", commitment({"x": np.full((1, 2), i, np.float32)}), commitment(outputs)
        leaves.append(JobLeaf(jid, "11" * 32, ic, oc, "receipt", price + i, "0x" + "ce" * 20))
        results.append(JobResult(job_id=jid, model_hash="11" * 32, status=JobStatus.DONE, input_commitment=ic,
                                 output_commitment=oc, outputs=outputs, verification=VerificationLevel.RECEIPT))
    receipts = sign_batch(ident, leaves, timestamp_ms=1_700_000_000_000)
    return [replace(r, receipt=rc) for r, rc in zip(results, receipts, strict=True)], receipts


def test_batch_leaf_and_message_are_poseidon_over_the_documented_felts() -> None:
    from poseidon_py.poseidon_hash import poseidon_hash, poseidon_hash_many

    ident = Identity.generate("w")
    _, receipts = _batch(ident, 3, price=10**15)
    rc = receipts[1]
    leaf = poseidon_hash_many([short_string("CIRO_LEAF_V1"), 2, int("11" * 16, 16), int("11" * 16, 16),
                               int(rc.input_commitment[:32], 16), int(rc.input_commitment[32:], 16),
                               int(rc.output_commitment[:32], 16), int(rc.output_commitment[32:], 16),
                               ident.public_key, short_string("receipt"), 1_700_000_000_000, 10**15 + 1,
                               int("ce" * 20, 16)])
    assert rc.leaf() == leaf
    leaves = [r.leaf() for r in receipts] + [0]  # three leaves padded with a zero to four
    root = poseidon_hash(poseidon_hash(leaves[0], leaves[1]), poseidon_hash(leaves[2], leaves[3]))
    assert {r.root for r in receipts} == {hex(root)}
    assert rc.path == (hex(leaves[0]), hex(poseidon_hash(leaves[2], leaves[3])))
    total = 3 * 10**15 + 3
    assert rc.message() == poseidon_hash_many([short_string("CIRO_BATCH_V1"), root, ident.public_key, 3, total])
    assert (rc.scheme, rc.batch_size, rc.batch_total, rc.leaf_index) == (MERKLE_SCHEME, 3, total, 1)
    assert len({r.signature for r in receipts}) == 1  # one signature for the batch
    assert Receipt.from_dict(json.loads(json.dumps(rc.to_dict()))) == rc


def test_a_batch_of_one_is_its_own_root() -> None:
    ident = Identity.generate("w")
    [result], [rc] = _batch(ident, 1)
    assert (rc.path, rc.batch_size, int(rc.root, 16)) == ((), 1, rc.leaf())
    assert verify(result, trusted_workers=[ident.public_hex]).valid


def test_verify_checks_a_batched_receipt_and_names_each_tampering() -> None:
    ident, mallory = Identity.generate("w"), Identity.generate("mallory")
    results, receipts = _batch(ident, 5)
    for r in results:  # every job of the batch verifies on its own
        ok = verify(r, trusted_workers=[ident.public_hex])
        assert ok.valid, ok.text()
    base = results[2].to_dict()

    def why(**receipt: object) -> str:
        d = json.loads(json.dumps(base))
        d["receipt"].update(receipt)
        failures = verify(d).failures
        assert [c.name for c in failures] == ["receipt signature"], failures
        return failures[0].detail

    rc = base["receipt"]
    other = commitment({"y": np.array([[9.0, 9.0]], np.float32)})
    d = json.loads(json.dumps(base))  # a changed output, rewritten everywhere but in the signed root
    d["outputs"]["y"]["data"][0] = 9.0
    d["outputs"]["y"]["data"][1] = 9.0
    d["output_commitment"] = d["receipt"]["output_commitment"] = other
    [failure] = verify(d).failures
    assert "not the signed root" in failure.detail and "output" in failure.detail
    assert "not the signed root" in why(path=[rc["path"][0], hex(int(rc["path"][1], 16) + 1), rc["path"][2]])
    assert "not the signed root" in why(leaf_index=3)  # another index of the same batch
    assert why(leaf_index=5) == "leaf index 5 is outside a batch of 5 job(s)"
    assert why(batch_size=8).startswith("not a valid signature")  # the signed count, enlarged
    assert "does not fit a batch of 5" in why(path=rc["path"][:2])
    assert "not the signed root" in why(price="1")  # the price the worker is owed
    assert "not the signed root" in why(client="0x1")
    assert why(root=receipts[0].root[:-1] + "0" if receipts[0].root[-1] != "0" else receipts[0].root[:-1] + "1"
               ).startswith("the job's leaf at index 2")
    forged = sign_batch(mallory, [JobLeaf(r.job_id, r.model_hash, r.input_commitment, r.output_commitment,
                                          r.level, r.price, r.client) for r in receipts],
                        timestamp_ms=1_700_000_000_000)[2]
    assert why(signature=list(forged.signature)) == (f"not a valid signature by worker key {ident.public_hex[:18]}"
                                                     "... over the batch root, size and total")
    # Mallory's whole batch is valid, but by Mallory: the trusted key list catches it.
    d = json.loads(json.dumps(base))
    d["receipt"] = forged.to_dict()
    assert {c.name for c in verify(d, trusted_workers=[ident.public_hex]).failures} == {"worker key"}
    assert why(scheme="stark-ecdsa-poseidon-merkle-v9").startswith("unknown receipt scheme")

"""Signed receipts: a worker's signature over what it computed (encoding in ``docs/encoding.md``).

Two schemes. ``stark-ecdsa-poseidon-v1`` (one signature a job, still verified for results already stored) binds
(job id, model hash, input commitment, output commitment, worker key, verification level, timestamp) into one
Poseidon hash, signed with the worker's Stark key. ``stark-ecdsa-poseidon-merkle-v1`` (what workers sign now)
puts each job's leaf (those fields plus the price the worker is owed and the paying client) in a Poseidon Merkle
tree over the batch the worker ran and signs the batch once: its root, key, number of jobs and total price. A
job's receipt carries its leaf fields, its index and path, and the batch's root, size, total and signature; the
same checks run in Cairo (``contracts/src/merkle.cairo``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .identity import MAX_MESSAGE, Identity, verify_felt
from .merkle import batch_message, merkle_levels, receipt_leaf, root_from_path

__all__ = ["MERKLE_SCHEME", "RECEIPT_DOMAIN", "SINGLE_SCHEME", "JobLeaf", "Receipt", "batch_message",
           "receipt_leaf", "receipt_message", "short_string", "sign_batch", "sign_receipt"]

#: One signature a job (receipts stored before batches; verified, no longer made).
SINGLE_SCHEME = "stark-ecdsa-poseidon-v1"
#: One signature a batch over the Merkle root of its jobs' leaves.
MERKLE_SCHEME = "stark-ecdsa-poseidon-merkle-v1"


def short_string(text: str) -> int:
    """Cairo short string: the ASCII bytes as a big-endian integer (at most 31 characters)."""
    raw = text.encode("ascii")
    if len(raw) > 31:
        raise InputError(f"{text!r} is longer than a Cairo short string (31 characters).")
    return int.from_bytes(raw, "big")


RECEIPT_DOMAIN = short_string("CIRO_RECEIPT_V1")


def _u256(hex_digest: str, what: str) -> tuple[int, int]:
    try:
        value = int(hex_digest, 16)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} {hex_digest!r} is not a hex digest.") from exc
    if len(hex_digest) != 64:
        raise InputError(f"{what} must be 64 hex characters (a SHA-256 digest), got {len(hex_digest)}.")
    return value >> 128, value & ((1 << 128) - 1)


def receipt_message(*, job_id: str, model_hash: str, input_commitment: str, output_commitment: str,
                    worker_key: int, level: str, timestamp_ms: int) -> int:
    """The felt a worker signs: Poseidon over the receipt's fields (see docs/encoding.md)."""
    from starknet_pathfinder_crypto import poseidon_hash_many  # Rust; ~6x faster than poseidon_py

    felts = [RECEIPT_DOMAIN, _job_felt(job_id), *_u256(model_hash, "model hash"),
             *_u256(input_commitment, "input commitment"), *_u256(output_commitment, "output commitment"),
             worker_key, short_string(level), timestamp_ms]
    return int(poseidon_hash_many(felts))


def _job_felt(job_id: str) -> int:
    try:
        job = int(job_id, 16)
    except ValueError as exc:
        raise InputError(f"Job id {job_id!r} is not hex.") from exc
    if not 0 <= job < 2**128:
        raise InputError(f"Job id {job_id!r} does not fit 128 bits.")
    return job


def _digest(hex_digest: str, what: str) -> int:
    high, low = _u256(hex_digest, what)
    return (high << 128) | low


def _digest_of(model_hash: str) -> int:
    return _digest(model_hash, "model hash")


def _hex(text: str) -> int:
    return int(text, 16)


@dataclass(frozen=True)
class Receipt:
    """A worker's signed statement about one job. Merkle receipts add the job's price and client (its leaf's
    last fields) and the batch: ``leaf_index`` of ``batch_size`` jobs, sibling ``path``, ``root`` and
    ``batch_total`` (the sum of the batch's prices); the ``signature`` is over the batch message."""

    job_id: str
    model_hash: str
    input_commitment: str
    output_commitment: str
    worker_key: str
    level: str
    timestamp_ms: int
    signature: tuple[str, str]
    scheme: str = SINGLE_SCHEME
    price: int = 0
    client: str = "0x0"
    leaf_index: int = 0
    path: tuple[str, ...] = ()
    batch_size: int = 1
    batch_total: int = 0
    root: str = "0x0"

    @property
    def batched(self) -> bool:
        return self.scheme == MERKLE_SCHEME

    def leaf(self) -> int:
        """This job's Merkle leaf (``receipt_leaf``)."""
        return receipt_leaf(job_id=_job_felt(self.job_id), model_hash=_digest(self.model_hash, "model hash"),
                            input_commitment=_digest(self.input_commitment, "input commitment"),
                            output_commitment=_digest(self.output_commitment, "output commitment"),
                            worker_key=int(self.worker_key, 16), level=short_string(self.level),
                            timestamp_ms=self.timestamp_ms, price=self.price, client=int(self.client, 16))

    def message(self) -> int:
        """The felt the signature is over: the receipt message (single) or the batch message (Merkle)."""
        if self.batched:
            return batch_message(root=int(self.root, 16), worker_key=int(self.worker_key, 16),
                                 count=self.batch_size, total=self.batch_total)
        return receipt_message(job_id=self.job_id, model_hash=self.model_hash,
                               input_commitment=self.input_commitment, output_commitment=self.output_commitment,
                               worker_key=int(self.worker_key, 16), level=self.level,
                               timestamp_ms=self.timestamp_ms)

    def problem(self) -> str | None:
        """Why this receipt does not verify (None when it does): its leaf, path, index and signature."""
        try:
            if self.scheme not in (SINGLE_SCHEME, MERKLE_SCHEME):
                return f"unknown receipt scheme {self.scheme!r} (this build knows {SINGLE_SCHEME}, {MERKLE_SCHEME})"
            if self.batched:
                why = self._batch_problem()
                if why:
                    return why
            r, s = (int(x, 16) for x in self.signature)
            if not verify_felt(int(self.worker_key, 16), self.message(), r, s):
                what = "batch root, size and total" if self.batched else "receipt"
                return f"not a valid signature by worker key {self.worker_key[:18]}... over the {what}"
        except (InputError, ValueError, TypeError) as exc:
            return f"malformed receipt ({exc})"
        return None

    def _batch_problem(self) -> str | None:
        n, i = self.batch_size, self.leaf_index
        if not 1 <= n < 2**64 or not 0 <= i < n:
            return f"leaf index {i} is outside a batch of {n} job(s)"
        depth = (n - 1).bit_length()
        if len(self.path) != depth:
            return f"a path of {len(self.path)} sibling(s) does not fit a batch of {n} job(s) ({depth} expected)"
        if not 0 <= self.price <= self.batch_total < 2**128:
            return f"price {self.price} is above the batch's signed total {self.batch_total}"
        root = root_from_path(self.leaf(), i, [int(x, 16) for x in self.path])
        if root != int(self.root, 16):
            return (f"the job's leaf at index {i} and its path hash to root {hex(root)[:18]}..., not the signed root "
                    f"{self.root[:18]}...: a leaf field (output, price, ...), the index or the path was changed")
        return None

    def signature_valid(self) -> bool:
        return self.problem() is None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "job_id": self.job_id, "model_hash": self.model_hash, "input_commitment": self.input_commitment,
            "output_commitment": self.output_commitment, "worker_key": self.worker_key, "level": self.level,
            "timestamp_ms": self.timestamp_ms, "signature": list(self.signature), "scheme": self.scheme}
        if self.batched:
            d.update(price=str(self.price), client=self.client, leaf_index=self.leaf_index, path=list(self.path),
                     batch_size=self.batch_size, batch_total=str(self.batch_total), root=self.root)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Receipt:
        try:
            sig = d["signature"]
            scheme = str(d.get("scheme", SINGLE_SCHEME))
            batch: dict[str, Any] = {}
            if scheme == MERKLE_SCHEME:
                batch = {"price": int(d["price"]), "client": str(d["client"]), "leaf_index": int(d["leaf_index"]),
                         "path": tuple(str(x) for x in d["path"]), "batch_size": int(d["batch_size"]),
                         "batch_total": int(d["batch_total"]), "root": str(d["root"])}
            return cls(job_id=str(d["job_id"]), model_hash=str(d["model_hash"]),
                       input_commitment=str(d["input_commitment"]), output_commitment=str(d["output_commitment"]),
                       worker_key=str(d["worker_key"]), level=str(d["level"]), timestamp_ms=int(d["timestamp_ms"]),
                       signature=(str(sig[0]), str(sig[1])), scheme=scheme, **batch)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(f"Malformed receipt ({exc}). A receipt needs job_id, model_hash, input_commitment, "
                             "output_commitment, worker_key, level, timestamp_ms and signature [r, s]; a "
                             f"{MERKLE_SCHEME} receipt also price, client, leaf_index, path, batch_size, "
                             "batch_total and root.") from exc


def sign_receipt(identity: Identity, *, job_id: str, model_hash: str, input_commitment: str,
                 output_commitment: str, level: str, timestamp_ms: int | None = None) -> Receipt:
    """A single-scheme receipt (one signature for one job): what stores written before batches hold."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    while True:
        msg = receipt_message(job_id=job_id, model_hash=model_hash, input_commitment=input_commitment,
                              output_commitment=output_commitment, worker_key=identity.public_key, level=level,
                              timestamp_ms=ts)
        if 0 < msg < MAX_MESSAGE:
            break
        ts += 1  # a Poseidon output >= 2**251 (odds ~2**-59) cannot be signed: move the timestamp by 1 ms
    r, s = identity.sign(msg)
    return Receipt(job_id, model_hash, input_commitment, output_commitment, identity.public_hex, level, ts,
                   (hex(r), hex(s)))


@dataclass(frozen=True)
class JobLeaf:
    """What a worker states about one job of a batch, besides its own key and the time."""

    job_id: str
    model_hash: str
    input_commitment: str
    output_commitment: str
    level: str
    price: int = 0  # token base units the worker is owed (0: unpaid)
    client: str = "0x0"  # the paying account's address on chain (0x0: unpaid)


def sign_batch(identity: Identity, jobs: list[JobLeaf], *, timestamp_ms: int | None = None) -> list[Receipt]:
    """One signature over the Merkle root of the jobs' leaves; returns each job's receipt, in order."""
    if not jobs:
        return []
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    key = identity.public_key
    total = sum(j.price for j in jobs)
    digests: dict[str, int] = {}  # a batch's jobs share a model hash, level and client: convert each once

    def felt(text: str, convert: Callable[[str], int]) -> int:
        if text not in digests:
            digests[text] = convert(text)
        return digests[text]

    while True:
        leaves = [receipt_leaf(job_id=_job_felt(j.job_id), model_hash=felt(j.model_hash, _digest_of),
                               input_commitment=_digest(j.input_commitment, "input commitment"),
                               output_commitment=_digest(j.output_commitment, "output commitment"), worker_key=key,
                               level=felt(j.level, short_string), timestamp_ms=ts, price=j.price,
                               client=felt(j.client, _hex)) for j in jobs]
        levels = merkle_levels(leaves)
        root = levels[-1][0]
        msg = batch_message(root=root, worker_key=key, count=len(jobs), total=total)
        if 0 < msg < MAX_MESSAGE:
            break
        ts += 1  # as in sign_receipt: an unsignable message (odds ~2**-59) moves the batch's time by 1 ms
    r, s = identity.sign(msg)
    sig, root_hex, worker = (hex(r), hex(s)), hex(root), identity.public_hex
    nodes = [[hex(x) for x in level] for level in levels[:-1]]  # each node's hex once, for every path through it
    return [Receipt(j.job_id, j.model_hash, j.input_commitment, j.output_commitment, worker, j.level, ts, sig,
                    scheme=MERKLE_SCHEME, price=j.price, client=j.client, leaf_index=i,
                    path=tuple(level[(i >> k) ^ 1] for k, level in enumerate(nodes)), batch_size=len(jobs),
                    batch_total=total,
                    root=root_hex) for i, j in enumerate(jobs)]

"""CiroLedger (settlement v2): client deposits, signed cumulative spend authorizations, per-batch settlement of
worker-signed Merkle roots, and disputes. The contract is ``contracts/src/ledger.cairo``; docs/settlement.md has
the flow, the formats and the threat model.

- A client registers its Stark key and deposits; with each request it signs :func:`spend_message` over the
  cumulative amount it owes to date (:func:`sign_spend`): a cap on what it may ever be charged in total.
- The operator names what each settlement charges (:class:`Charge`: an authorization and an amount); the chain
  charges exactly that amount while the client's total charged stays within the signed cap.
- A worker signs one batch message per batch (:func:`sign_batch`, ``ciro.merkle.batch_message``).
- The operator settles many worker batches and client charges in one ``settle_batch`` transaction.
- Anyone proves a job later with its leaf and path (``job_in_batch``) or disputes within the window.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..identity import Identity
from ..merkle import batch_message, merkle_levels, merkle_path, receipt_leaf
from ..receipts import short_string
from .client import ChainClient
from .contracts import _Bound
from .deploy import declare, deploy

__all__ = ["SPEND_HEADER", "Charge", "CiroLedger", "Leaf", "LeafProof", "SignedBatch", "SpendAuthorization",
           "deploy_ledger", "encode_spend_header", "parse_spend_header", "sign_batch", "sign_spend", "spend_message"]

SPEND_DOMAIN = short_string("CIRO_SPEND_V1")


def spend_message(*, chain_id: int, ledger: int, client: int, cumulative: int) -> int:
    """What a client signs: Poseidon('CIRO_SPEND_V1', chain id, ledger address, client account, cumulative)."""
    from starknet_pathfinder_crypto import poseidon_hash_many

    if not 0 <= cumulative < 2**128:
        raise InputError(f"A cumulative spend must fit 128 bits, got {cumulative}.")
    return int(poseidon_hash_many([SPEND_DOMAIN, chain_id, ledger, client, cumulative]))


@dataclass(frozen=True)
class SpendAuthorization:
    """What a client signs: its cumulative spend to date, the most it may ever be charged in total."""

    client: int
    cumulative: int
    r: int
    s: int


@dataclass(frozen=True)
class Charge:
    """What the operator charges a client in one settlement: ``amount`` under ``authorization``'s cap (the
    contract's ``SpendAuthorization`` with its ``amount``). The chain refuses a charge that would take the client's
    total charged above the signed cumulative."""

    authorization: SpendAuthorization
    amount: int

    def __post_init__(self) -> None:
        if not 0 < self.amount < 2**128:
            raise InputError(f"A charge's amount must be positive and fit 128 bits, got {self.amount}: charge what "
                             "the client's settled jobs cost (leave out a client with nothing to pay).")

    def as_cairo(self) -> dict[str, int]:
        a = self.authorization
        return {"client": a.client, "cumulative": a.cumulative, "amount": self.amount, "r": a.r, "s": a.s}


def sign_spend(identity: Identity, *, chain_id: int, ledger: int, client: int, cumulative: int) -> SpendAuthorization:
    r, s = identity.sign(spend_message(chain_id=chain_id, ledger=ledger, client=client, cumulative=cumulative))
    return SpendAuthorization(client, cumulative, r, s)



#: The HTTP header a prepaid request carries its caps in (docs/settlement.md, "Prepaid jobs through the gateway").
SPEND_HEADER = "x-ciro-spend"


def encode_spend_header(client: int, caps: Sequence[SpendAuthorization]) -> str:
    """The ``x-ciro-spend`` value: the paying account and one signed cap per job, as compact JSON."""
    return json.dumps({"client": hex(client), "caps": [{"cumulative": str(a.cumulative), "r": hex(a.r), "s": hex(a.s)}
                                                       for a in caps]}, separators=(",", ":"))


def _header_int(value: Any, what: str) -> int:
    try:
        return int(value, 16) if isinstance(value, str) and value.lower().startswith("0x") else int(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{SPEND_HEADER}: {what} must be an integer (decimal or 0x-hex), got {value!r}.") from exc


def parse_spend_header(text: str) -> tuple[int, list[SpendAuthorization]]:
    """The paying account and its signed caps from an ``x-ciro-spend`` value (:func:`encode_spend_header`)."""
    try:
        d = json.loads(text)
        caps = d["caps"]
        if not isinstance(caps, list) or not caps:
            raise TypeError("caps is not a non-empty list")
        account = _header_int(d["client"], "client")
        auths = [SpendAuthorization(account, _header_int(c["cumulative"], "cumulative"), _header_int(c["r"], "r"),
                                    _header_int(c["s"], "s")) for c in caps]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{SPEND_HEADER} is malformed ({exc}): send JSON {{\"client\": \"0x<account>\", \"caps\": "
                         "[{\"cumulative\": N, \"r\": \"0x..\", \"s\": \"0x..\"}, ...]}, one cap per job (the SDK does "
                         "it with prepaid=True).") from exc
    for a in auths:
        if not 0 < a.cumulative < 2**128:
            raise InputError(f"{SPEND_HEADER}: a cumulative cap is a positive 128-bit amount, got {a.cumulative}.")
    return account, auths

@dataclass(frozen=True)
class Leaf:
    """The fields of a receipt leaf (``ciro.merkle.receipt_leaf``); digests as 256-bit integers, level a short
    string's felt."""

    job_id: int
    model_hash: int
    input_commitment: int
    output_commitment: int
    worker_key: int
    level: int
    timestamp_ms: int
    price: int
    client: int

    def hash(self) -> int:
        return receipt_leaf(job_id=self.job_id, model_hash=self.model_hash, input_commitment=self.input_commitment,
                            output_commitment=self.output_commitment, worker_key=self.worker_key, level=self.level,
                            timestamp_ms=self.timestamp_ms, price=self.price, client=self.client)

    def as_cairo(self) -> dict[str, Any]:
        """The contract's ``Leaf``: the job id and the 11 felts hashed after it (``LeafBody``)."""
        return {"job_id": self.job_id, "body": self.body_as_cairo()}

    def body_as_cairo(self) -> dict[str, int]:
        """The contract's ``LeafBody``: each 256-bit digest as its low and high halves, then the other fields."""
        low = (1 << 128) - 1
        return {"model_low": self.model_hash & low, "model_high": self.model_hash >> 128,
                "input_low": self.input_commitment & low, "input_high": self.input_commitment >> 128,
                "output_low": self.output_commitment & low, "output_high": self.output_commitment >> 128,
                "worker_key": self.worker_key, "level": self.level, "timestamp_ms": self.timestamp_ms,
                "price": self.price, "client": self.client}


@dataclass(frozen=True)
class SignedBatch:
    """A worker's batch: its leaves, the tree's levels, and its signature over (root, key, count, total)."""

    worker: int  # the worker's account
    leaves: tuple[Leaf, ...]
    levels: list[list[int]]
    total: int
    r: int
    s: int

    @property
    def root(self) -> int:
        return self.levels[-1][0]

    @property
    def count(self) -> int:
        return len(self.leaves)

    def as_cairo(self) -> dict[str, int]:
        return {"worker": self.worker, "root": self.root, "count": self.count, "total": self.total, "r": self.r,
                "s": self.s}

    def proof(self, batch_id: int, index: int) -> LeafProof:
        return LeafProof(batch_id, self.worker, self.leaves[index], index, tuple(merkle_path(self.levels, index)))


def sign_batch(identity: Identity, worker: int, leaves: Sequence[Leaf], *, total: int | None = None,
               count: int | None = None) -> SignedBatch:
    """Sign a batch of leaves with the worker's key. ``total``/``count`` default to the leaves' price sum and
    number (passing others signs a message that disagrees with the leaves: only tests of the contract do)."""
    levels = merkle_levels([leaf.hash() for leaf in leaves])
    total = sum(leaf.price for leaf in leaves) if total is None else total
    count = len(leaves) if count is None else count
    r, s = identity.sign(batch_message(root=levels[-1][0], worker_key=identity.public_key, count=count, total=total))
    return SignedBatch(worker, tuple(leaves), levels, total, r, s)


@dataclass(frozen=True)
class LeafProof:
    batch_id: int
    worker: int
    leaf: Leaf
    index: int
    path: tuple[int, ...]

    def as_cairo(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "worker": self.worker, "leaf": self.leaf.as_cairo(), "index": self.index,
                "path": list(self.path)}

    def at_cairo(self) -> dict[str, Any]:
        """The contract's ``LeafAt`` (one side of an equivocation): ``batch_id * 2**64 + index``, the leaf's fields
        after its job id, the path."""
        return {"position": (self.batch_id << 64) | self.index, "body": self.leaf.body_as_cairo(),
                "path": list(self.path)}


@dataclass(frozen=True)
class BatchRecord:
    root: int
    count: int
    total: int
    settled_at: int


class CiroLedger(_Bound):
    NAME = "CiroLedger"

    def register_client_key_call(self, public_key: int) -> Any:
        return self.prepare("register_client_key", public_key)

    def deposit_call(self, amount: int) -> Any:
        return self.prepare("deposit", amount)

    def request_withdrawal_call(self, amount: int) -> Any:
        return self.prepare("request_withdrawal", amount)

    def withdraw_call(self) -> Any:
        return self.prepare("withdraw")

    def settle_batch_call(self, batch_id: int, workers: Sequence[SignedBatch | dict[str, int]],
                          charges: Sequence[Charge | dict[str, int]]) -> Any:
        """One settlement: the workers' signed batches and what to charge each client (a dict is passed as is:
        only tests of the contract send raw fields)."""
        return self.prepare("settle_batch", batch_id,
                            [w.as_cairo() if isinstance(w, SignedBatch) else w for w in workers],
                            [c.as_cairo() if isinstance(c, Charge) else c for c in charges])

    def dispute_equivocation_call(self, first: LeafProof, second: LeafProof) -> Any:
        """Two leaves of one job by one worker with different outputs; the call names the worker and the job id
        once (cheaper calldata), so proofs of two workers or two jobs are refused here."""
        if first.worker != second.worker or first.leaf.job_id != second.leaf.job_id:
            raise InputError("An equivocation is two leaves of the same job by the same worker: these proofs are "
                             f"of worker {first.worker:#x} job {first.leaf.job_id:#x} and worker "
                             f"{second.worker:#x} job {second.leaf.job_id:#x}. Pass two proofs of one job.")
        for proof in (first, second):
            if not (0 <= proof.batch_id < 2**64 and 0 <= proof.index < 2**64):
                raise InputError(f"A batch id and a leaf index fit 64 bits each, got {proof.batch_id} and "
                                 f"{proof.index}.")
        return self.prepare("dispute_equivocation", first.worker, first.leaf.job_id, first.at_cairo(),
                            second.at_cairo())

    def dispute_quorum_call(self, accused: LeafProof, f: int, validators: Sequence[LeafProof]) -> Any:
        return self.prepare("dispute_quorum", accused.as_cairo(), f, [v.as_cairo() for v in validators])

    async def job_in_batch(self, batch_id: int, worker: int, leaf: int, index: int, path: Sequence[int]) -> bool:
        return bool(await self.view("job_in_batch", batch_id, worker, leaf, index, list(path)))

    async def batch(self, batch_id: int, worker: int) -> BatchRecord:
        b = await self.view("batch", batch_id, worker)
        return BatchRecord(int(b["root"]), int(b["count"]), int(b["total"]), int(b["settled_at"]))

    async def balance_of(self, client: int) -> int:
        return int(await self.view("balance_of", client))

    async def charged_of(self, client: int) -> int:
        return int(await self.view("charged_of", client))

    async def pending_withdrawal(self, client: int) -> tuple[int, int]:
        amount, ready_at = await self.view("pending_withdrawal", client)
        return int(amount), int(ready_at)

    async def disputed(self, job_id: int, worker: int) -> bool:
        return bool(await self.view("disputed", job_id, worker))

    async def chain_id(self) -> int:
        return int(await self.chain.node.get_chain_id(), 16)


async def deploy_ledger(gov: ChainClient, *, token: int, pool: int, withdrawal_delay_s: int,
                        dispute_window_s: int) -> int:
    """Declare and deploy CiroLedger with ``gov`` as operator, and give it the slashing right in CDCPool (``gov``
    must be the pool's governance). Idempotent like :func:`ciro.chain.deploy_network`; returns its address."""
    cls = await declare(gov, "CiroLedger")
    address, _ = await deploy(gov, cls, [gov.address, token, pool, withdrawal_delay_s, dispute_window_s],
                              salt=gov.address, what="Deploying CiroLedger")
    from .contracts import CDCPool

    pool_binding = CDCPool(gov, pool)
    if int(await pool_binding.view("ledger")) != address:
        await gov.execute([pool_binding.prepare("set_ledger", address)], what="CDCPool.set_ledger")
    return address
